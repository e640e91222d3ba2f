"""Question: what does `classify export --format web --int8` change in the browser? The download (smaller), the
time a photo (measured: slower in WebAssembly, 2026-12-03), and the top class (the same on nearly every photo).

Exports one bundle's web app twice (float, --int8) with onnxruntime-web's files from the npm tarball scripts/setup.sh
packs, serves each folder on 127.0.0.1, and in headless Chromium (Debian's) picks the same food-dev valid photos in
the page's file input, one after another, as a user would; the page's own timer ("Classified in N ms on this
device": decode, resize, the model, the on-menu score) is read after each. The two exports run in turn, photo by
photo, in one browser.
  python bench/web_latency.py --model RUN_DIR [--photos 20] [--no-record]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, append, machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args):
        pass


def ort_dist(scratch: Path) -> Path:
    from classify import share

    tarball = ROOT / ".venv" / "npm-cache" / f"onnxruntime-web-{share.ORT_VERSION}.tgz"
    if not tarball.is_file():
        raise SystemExit(f"{tarball} is missing: run scripts/setup.sh (it packs onnxruntime-web with npm)")
    with tarfile.open(tarball) as tar:
        tar.extractall(scratch, members=[m for m in tar.getmembers()
                                         if m.name in {f"package/dist/{f}" for f in share.ORT_FILES}], filter="data")
    return scratch / "package" / "dist"


def serve(folder: Path) -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


def open_page(browser, url: str):
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("document.body.dataset.state === 'ready' || document.body.dataset.state === 'error'",
                           timeout=120_000)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#status")
    return page


def classify_on(page, photo: Path, count: int) -> tuple[str, float]:
    page.bring_to_front()  # a page in the background is throttled: its photo would wait
    page.locator("#file").set_input_files(str(photo))
    page.wait_for_function(f"document.body.dataset.count === '{count}' || document.body.dataset.state === 'error'",
                           timeout=120_000)
    if page.evaluate("document.body.dataset.state") == "error":
        raise SystemExit(f"the page failed on {photo}: {page.inner_text('#status')}")
    milliseconds = float(re.search(r"Classified in (\d+) ms", page.inner_text("#status")).group(1))
    return page.inner_text("#top1"), milliseconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model bundle")
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    machine_line = machine()
    valid = sorted((FOOD_DEV / "valid").rglob("*.jpg"))
    photos = valid[::max(1, len(valid) // args.photos)][:args.photos]
    with tempfile.TemporaryDirectory() as scratch:
        dist, urls, sizes = ort_dist(Path(scratch)), {}, {}
        for name, flags in (("float", []), ("int8", ["--int8"])):
            out = Path(scratch) / name
            subprocess.run([sys.executable, "-m", "classify", "export", "--model", args.model, "--format", "web",
                            "--out", str(out), "--ort-dir", str(dist), *flags], check=True, cwd=ROOT)
            urls[name], sizes[name] = serve(out), (out / "model.onnx").stat().st_size / 1e6
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                 args=["--no-sandbox", "--disable-gpu"])
            pages = {name: open_page(browser, url) for name, url in urls.items()}
            tops, times = {name: [] for name in pages}, {name: [] for name in pages}
            # A warm-up photo first (not one of the timed: picking the same file again fires no change event)
            for count, photo in enumerate([valid[-1], *photos], start=1):
                for name, page in pages.items():
                    top, milliseconds = classify_on(page, photo, count)
                    if count > 1:
                        tops[name].append(top)
                        times[name].append(milliseconds)
            browser.close()
    rows = [[name, f"{sizes[name]:.1f}", f"{np.percentile(times[name], 50):.0f}",
             f"{np.percentile(times[name], 95):.0f}"] for name in pages]
    same = sum(a == b for a, b in zip(tops["float"], tops["int8"]))
    body = table(["export", "model.onnx MB", "p50 ms a photo", "p95 ms a photo"], rows)
    body += (f"\n\n{args.photos} food-dev valid photos picked one after another in each page (after one warm-up), "
             f"headless Chromium, onnxruntime-web's WebAssembly backend; the page's own timer (decode, resize, "
             f"model, on-menu score). int8 against float: {np.median(times['int8']) / np.median(times['float']):.2f}x "
             f"the time a photo at the median, {sizes['int8'] / sizes['float']:.2f} of the download; the same top "
             f"class on "
             f"{same} of {len(photos)} photos.")
    print(body)
    if not args.no_record:
        append("web_latency.py: the web export in Chromium, float and --int8", body, machine_line)


if __name__ == "__main__":
    main()
