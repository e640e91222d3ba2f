"""Review UI speed: time from a decision key press to the next image shown, in Chromium, on a 10,000-image workspace.

    python bench/review_latency.py                       # builds /tmp/platekit-review-bench (kept for reruns)
    python bench/review_latency.py --decisions 60 --screenshot docs/review.png

Each decision is a real key press ('a' or 'r') in headless Chromium; the time runs from the keydown event to the
first animation frame after the next image has loaded (new id in the view, <img> complete). Prints a table and
adds a row under "## review" in bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw  # noqa: E402

from curate.workspace import Workspace  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CATEGORIES = ("pad thai", "pho", "ramen", "sushi", "tacos")

# Resolves with the ms from the keydown (window.__t0, set by a capture listener) to the frame after the next image is
# shown: a new id in the view and its <img> decoded.
WAIT_NEXT = """(old) => new Promise(resolve => {
  const check = () => {
    const stage = document.querySelector('#rv-view .rv-stage');
    const img = stage && stage.querySelector('img');
    if (stage && stage.dataset.id !== old && img && img.complete && img.naturalWidth > 0)
      requestAnimationFrame(() => resolve(performance.now() - window.__t0));
    else requestAnimationFrame(check);
  };
  check();
})"""


def jpeg(seed: int) -> bytes:
    rng = random.Random(seed)
    size = (rng.choice((320, 400, 480)), rng.choice((240, 300, 360)))
    image = Image.new("RGB", size, tuple(rng.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = rng.randint(0, size[0] - 40), rng.randint(0, size[1] - 40)
        draw.ellipse((x, y, x + rng.randint(10, 60), y + rng.randint(10, 60)), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def build_workspace(root: Path, n: int) -> Path:
    """A workspace of n generated images, 80% of them in one category (the slow case for per-category queries), with phashes."""
    with Workspace(root) as ws:
        have = ws.count()
        if have < n:
            from tqdm import tqdm

            for i in tqdm(range(have, n), desc="building workspace", unit="img"):
                flags = ("blurry",) if i % 7 == 0 else ()
                ws.add_image(jpeg(i), CATEGORIES[0] if i % 5 else CATEGORIES[1 + i // 5 % (len(CATEGORIES) - 1)],
                             source="bing", query="bench", source_url=f"https://example.com/{i}.jpg", flags=flags)
            ids = [r.id for r in ws.list_images() if r.phash is None]
            rng = random.Random(0)
            ws.set_hashes("phash", {i: rng.getrandbits(64) for i in ids})
        with ws.transaction() as db:  # every run starts from the same state: all pending, no decisions
            db.execute("UPDATE images SET status = 'pending', duplicate_of = NULL, crop = NULL")
            db.execute("DELETE FROM decisions")
    return root


def measure(url: str, decisions: int, browser) -> list[float]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(url)
    page.wait_for_selector("#rv-view .rv-stage img")
    page.evaluate("document.addEventListener('keydown', () => { window.__t0 = performance.now(); }, true)")
    times = []
    for k in range(decisions + 3):
        old = page.get_attribute("#rv-view .rv-stage", "data-id")
        page.keyboard.press("a" if k % 3 else "r")
        ms = page.evaluate(WAIT_NEXT, old)
        if k >= 3:  # the first decisions warm up the server's caches and the browser
            times.append(ms)
        page.wait_for_timeout(150)  # a person looks at an image for longer than this; lets the prefetch land
    page.close()
    return times


def screenshot(out: Path, browser, tmp: Path, sizes=((1280, 800),)) -> None:
    """The main view over a small workspace of real food photos (food-dev) when present, else generated ones, at each
    window size (`out` for the first, `out` with the size in its name for the others)."""
    from curate.dedup import dedup
    from curate.quality import check
    from curate.review import launch

    food = ROOT.parent / "shared" / "data" / "food-dev" / "train"
    with Workspace(tmp) as ws:
        if food.is_dir():
            names = sorted(os.listdir(food))[:3]
            for name in names:
                paths = sorted((food / name).iterdir())[:14]
                if name == names[0]:  # a scraped photo of the second dish, fifth in the first: what suspects finds
                    paths.insert(4, sorted((food / names[1]).iterdir())[20])
                for path in paths:
                    ws.add_image(path.read_bytes(), name.replace("_", " "), source="bing", query=f"{name} food",
                                 source_url=f"https://images.example.com/{name}/{path.name}")
        else:
            for i in range(30):
                ws.add_image(jpeg(i), "generated", source="bing", source_url=f"https://example.com/{i}.jpg")
        check(ws)
        dedup(ws, workers=1, by="hash")
        first = ws.list_images(category=next(iter(ws.categories())), status="pending")
        for record in first[:3]:
            ws.set_status(record.id, "accepted")
        ws.set_status(first[3].id, "rejected")
        target = first[4]
        ws.set_crop(target.id, (target.width // 8, target.height // 8, target.width * 7 // 8, target.height * 7 // 8))
    if food.is_dir():
        from curate.suspects import find_suspects

        with Workspace(tmp) as ws:
            find_suspects(ws)
    app = launch(tmp, port=None, open_browser=False, block=False, quiet=True)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for k, (width, height) in enumerate(sizes):
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(app.local_url)
            page.wait_for_selector("#rv-view .rv-stage img")
            if food.is_dir():  # the suspects' order: the scraped photo of another dish comes first
                page.click("#rv-sort input")
                page.locator('li[role=option][aria-label="most suspicious first"]').click()
                page.wait_for_function("document.querySelector('#rv-sort input').value === 'most suspicious first'")
                page.wait_for_timeout(500)
            page.wait_for_function("[...document.querySelectorAll('#rv-view img')].every(i => i.complete)")
            page.wait_for_timeout(1000)  # the strip's thumbnails in sight (the others load lazily, as they scroll in)
            page.screenshot(path=str(out if k == 0 else out.with_name(f"{out.stem}-{width}x{height}{out.suffix}")))
            page.close()
    finally:
        app.close()
        app.curate_workspace.close()


def append_result(row: list[str], header: list[str]) -> None:
    """Add `row` to the table under "## review" in bench/RESULTS.md, creating the file or the section if needed."""
    results = ROOT / "bench" / "RESULTS.md"
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    line = "| " + " | ".join(row) + " |\n"
    if "\n## review\n" not in text:
        text = text.rstrip("\n") + ("\n\n## review\n\nDecision key press → next image shown in headless Chromium "
                                    "([bench/review_latency.py](review_latency.py)).\n\n"
                                    "| " + " | ".join(header) + " |\n| " + " | ".join("---" for _ in header) + " |\n")
        text += line
    else:
        start = text.index("\n## review\n") + 1
        nxt = text.find("\n## ", start + 3)
        end = len(text) if nxt == -1 else nxt + 1
        section = text[start:end].rstrip("\n") + "\n" + line
        text = text[:start] + section + ("\n" if nxt != -1 else "") + text[end:]
    results.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=120,
                        help="key presses timed (past Gradio's 100-call run history, which once slowed each one more)")
    parser.add_argument("--workspace", default="/tmp/platekit-review-bench")
    parser.add_argument("--screenshot", help="also save a screenshot of the main view here (e.g. docs/review.png)")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()

    import gradio
    from playwright.sync_api import sync_playwright

    from curate.review import launch

    t0 = time.time()
    root = build_workspace(Path(args.workspace), args.images)
    print(f"workspace ready in {time.time() - t0:.0f} s: {root}")
    with Workspace(root) as ws:
        n_images, biggest = ws.count(), max(ws.stats().items(), key=lambda kv: kv[1]["total"])
    app = launch(root, port=None, open_browser=False, block=False, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            times = measure(app.local_url, args.decisions, browser)
            if args.screenshot:
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:
                    screenshot(ROOT / args.screenshot, browser, Path(tmp) / "ws")
                print(f"screenshot saved to {args.screenshot}")
            browser.close()
    finally:
        app.close()
        app.curate_workspace.close()

    times.sort()
    p50, p90 = statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))]
    header = ["date", "machine", "images (in the category)", "decisions", "p50 ms", "p90 ms", "max ms", "mean ms", "versions"]
    row = [str(date.today()), f"{platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs",
           f"{n_images:,} ({biggest[1]['total']:,} in {biggest[0]})", str(len(times)), f"{p50:.0f}", f"{p90:.0f}",
           f"{times[-1]:.0f}", f"{statistics.mean(times):.0f}", f"gradio {gradio.__version__}, Chromium headless"]
    width = max(len(h) for h in header)
    print("\n".join(f"{h.ljust(width)}  {v}" for h, v in zip(header, row)))
    print(f"target: decision → next image <= 300 ms: {'met' if p90 <= 300 else 'NOT met'} at p90")
    if not args.no_record:
        append_result(row, header)
    return 0 if p90 <= 300 else 1


if __name__ == "__main__":
    sys.exit(main())
