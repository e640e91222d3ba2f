"""Question: do features trained on the menu reject other dishes better than frozen pretrained ones?

bench/ood.py compares 17 on-menu scores on the frozen backbones' features: none rejects >= 50 % of other dishes at
95 % of valid kept (best AUROC 0.80). This trains the same backbone (lite0, the one that fine-tunes in minutes on 2
CPU cores) three ways on 7 of food-dev's 10 classes, the other 3 left out (bench/ood.py's three rotations), and
scores every bundle with its own rule and threshold, as `classify predict` would:

  all      head only, on cached features of the pretrained backbone (what the CPU default does, with one backbone)
  partial  the last stages and the head
  none     full fine-tune (the GPU default's strategy, with the CPU's epoch count)

in-menu = food-dev-extra's photos of the 7 classes, unknown = its photos of the other 3. Also kNN alone and
max-logit alone at their own valid thresholds, to see which part moves.

  python bench/ood_trained.py [--work /tmp/platekit-ood-trained] [--strategies all partial none] [--no-record]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ood import KEEP, ROTATIONS, SHARED, labelled, subset_folder  # noqa: E402
from record import FOOD_DEV, append, machine, table  # noqa: E402

import classify  # noqa: E402
from classify import data as D  # noqa: E402
from classify import menu  # noqa: E402
from classify.train import RunConfig, train  # noqa: E402

BACKBONE = "efficientnet_lite0"


def trained(data: Path, out: Path, strategy: str, cache: Path) -> Path:
    if not (out / "metrics.json").is_file():
        started = time.time()
        train(RunConfig(data=str(data), out=str(out), model=BACKBONE, freeze=strategy, feature_cache=str(cache),
                        keep=KEEP), progress=False)
        print(f"{out.name}: trained in {time.time() - started:.0f} s", flush=True)
    return out


def score(predictor, valid, inside, outside) -> dict:
    """name -> (AUROC, unknown rejected, in-menu kept): the bundle's rule at its threshold, then kNN and max-logit
    alone at thresholds keeping 95 % of valid (kNN scoring valid against the training photos, as training does)."""
    rows = {}
    (vx, vl), (ix, il), (ox, ol) = valid, inside, outside
    a, b = predictor.menu_scores(ix, il), predictor.menu_scores(ox, ol)
    rows["the bundle's rule (kNN + 2 x max-logit)"] = (menu.auroc(a, b), float((~predictor.on_menu(b, len(b))).mean()),
                                                      float(predictor.on_menu(a, len(a)).mean()))
    bank, k = predictor.menu_bank, predictor.bundle.menu_k
    train_bank = bank[: len(bank) - len(vx)]  # the bank is the training photos, then valid's
    for name, on_valid, fn in (
            ("kNN alone", lambda x, _: menu.scores(train_bank, x, k=k), lambda x, _: menu.scores(bank, x, k=k)),
            ("max-logit alone", lambda _, logits: logits.max(1), lambda _, logits: logits.max(1))):
        threshold = menu.pick_threshold(on_valid(vx, vl), KEEP)
        a, b = fn(ix, il), fn(ox, ol)
        rows[name] = (menu.auroc(a, b), float((b < threshold).mean()), float((a >= threshold).mean()))
    return rows


def decoded_extra(extra: dict, samples: list, size: int):
    """food-dev-extra decoded once at `size` (every lite0 bundle shares it); (cache, samples that decoded)."""
    if size not in extra:
        cache = D.load_cache(samples, size)
        extra[size] = cache, [D.Sample(p, int(y)) for p, y in zip(cache.paths, cache.labels)]
    return extra[size]


def rotation_rows(args, rotation, classes, samples, extra) -> dict:
    data, work = Path(args.data), Path(args.work)
    kept = [c for i, c in enumerate(classes) if i not in rotation]
    tag = "-".join(map(str, rotation))
    folder = subset_folder(work, data, kept, f"leave-{tag}")
    results = {}
    for strategy in args.strategies:
        started = time.time()
        predictor = classify.load(trained(folder, work / f"{strategy}-leave-{tag}", strategy, work / "cache"))
        valid = D.load_cache(labelled(folder / "valid", kept), predictor.cache_size)
        # Valid's outputs set the thresholds of the two parts alone (kNN against the training photos, see score);
        # the bundle's own rule uses the threshold training picked.
        extra_cache, extra_samples = decoded_extra(extra, samples, predictor.cache_size)
        known = np.array([classes[s.label] in kept for s in extra_samples])
        x, logits = predictor.features_and_logits(extra_cache.images)
        extra_acc = float((logits[known].argmax(1) == np.array(
            [kept.index(classes[s.label]) for s in extra_samples if classes[s.label] in kept])).mean())
        results[strategy] = (score(predictor, predictor.features_and_logits(valid.images), (x[known], logits[known]),
                                   (x[~known], logits[~known])),
                             predictor.metrics["accuracy"], extra_acc)
        print(f"{strategy} leave {tag}: {results[strategy]} ({time.time() - started:.0f} s)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(FOOD_DEV))
    parser.add_argument("--extra", default=str(SHARED / "food-dev-extra"))
    parser.add_argument("--work", default="/tmp/platekit-ood-trained")
    parser.add_argument("--strategies", nargs="+", default=["all", "partial", "none"])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    machine_line, started = machine(), time.time()
    classes = sorted(p.name for p in (Path(args.data) / "train").iterdir() if p.is_dir())
    samples, extra = labelled(Path(args.extra), classes), {}
    per_rotation = [rotation_rows(args, rotation, classes, samples, extra) for rotation in ROTATIONS]
    rows = []
    for strategy in args.strategies:
        valid_acc = np.mean([r[strategy][1] for r in per_rotation])
        extra_acc = np.mean([r[strategy][2] for r in per_rotation])
        for method in per_rotation[0][strategy][0]:
            values = np.array([r[strategy][0][method] for r in per_rotation])
            rows.append([strategy, f"{100 * valid_acc:.1f} / {100 * extra_acc:.1f} %", method,
                         f"{values[:, 0].mean():.4f}",
                         f"{100 * values[:, 1].mean():.1f} % ({', '.join(f'{100 * v:.0f}' for v in values[:, 1])})",
                         f"{100 * values[:, 2].mean():.1f} %"])
    body = (f"{BACKBONE} on 7 of food-dev's 10 classes (3 rotations, as bench/ood.py's protocol 2); in-menu: "
            f"food-dev-extra's photos of the 7, unknown: of the other 3; thresholds keep {KEEP:.0%} of valid. "
            f"Wall {time.time() - started:.0f} s.\n\n" + table(
                ["strategy", "accuracy valid / extra (7 classes)", "score", "AUROC (mean of 3)",
                 "other dishes rejected (per rotation)", "in-menu kept"], rows))
    print(body)
    if not args.no_record:
        append("On-menu score with features trained on the menu (bench/ood_trained.py)", body, machine_line)


if __name__ == "__main__":
    main()
