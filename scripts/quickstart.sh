#!/usr/bin/env bash
# The whole path, end to end: install, gather images, deduplicate, accept what passed the checks, export,
# train, evaluate, then serve the demo.
#   bash scripts/quickstart.sh                      scrape a few categories from Bing (needs internet)
#   bash scripts/quickstart.sh ../shared/data/food-dev   import a folder instead (ImageFolder, .zip, ...)
#   add --no-serve to stop before starting the demo (for scripts)
set -euo pipefail
cd "$(dirname "$0")/.."

source=""; serve=1
for arg in "$@"; do
  case "$arg" in
    --no-serve) serve=0 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) source="$arg" ;;
  esac
done
workspace=${PLATEKIT_WORKSPACE:-workspace}
export_dir=${PLATEKIT_EXPORT:-data/export}
run=${PLATEKIT_RUN:-runs/quickstart}
py=.venv/bin/python
export PYTHONUNBUFFERED=1  # keep stdout and stderr in order when the output goes to a log

bash scripts/setup.sh
step() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

if [ -n "$source" ]; then
  step "import $source"
  $py -m curate --workspace "$workspace" import "$source"
else
  step "scrape (Bing): pizza, sushi, pad thai, apple pie"
  $py -m curate --workspace "$workspace" scrape pizza sushi "pad thai" "apple pie" --per-class 60
fi
step "dedup"
# hash only: embedding every image with lite2 on a CPU would add about a minute (dedup --method both finds crops and mirrors too)
$py -m curate --workspace "$workspace" dedup --method hash
step "accept what passed the automatic checks"
$py -m curate --workspace "$workspace" accept
$py -m curate --workspace "$workspace" stats
step "export to $export_dir"
$py -m curate --workspace "$workspace" export "$export_dir" --overwrite
step "train (defaults) into $run"
$py -m classify train --data "$export_dir" --out "$run"
step "evaluate on the held-out test split"
$py -m classify evaluate --model "$run" --data "$export_dir"
echo
echo "quickstart: done in $(( $(date +%s) - started )) s; model bundle in $run"
if [ "$serve" = 1 ]; then
  step "demo (Ctrl-C to stop)"
  exec $py demo.py --model "$run"
fi
