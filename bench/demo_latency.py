"""Claim: the demo serves 16 concurrent clients x 20 requests each on 127.0.0.1 with 0 errors; p50/p95 latency on
the CPU. Starts `python demo.py` as a user would, on a bundle trained here (lite0, head only) unless --model is given,
and saves a screenshot of a real prediction to docs/demo.png with --screenshot.
  python bench/demo_latency.py [--model RUN_DIR] [--clients 16] [--requests 20] [--screenshot docs/demo.png]
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from record import FOOD_DEV, append, machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(model: Path, port: int) -> subprocess.Popen:
    import httpx
    process = subprocess.Popen([sys.executable, "demo.py", "--model", str(model), "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("demo.py did not start")


def screenshot(url: str, image: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        page.wait_for_selector("input[type=file]", state="attached", timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(image))
        page.wait_for_function("() => (document.querySelector('#latency')?.innerText || '').includes(' ms')",
                               timeout=60_000)
        page.wait_for_timeout(1000)  # let the label finish its transition
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(FOOD_DEV))
    parser.add_argument("--model", help="model bundle (default: train lite0 head-only on --data first)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--screenshot", help="save a screenshot of a prediction here (e.g. docs/demo.png)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    machine_line = machine()
    images = sorted((Path(args.data) / "valid").rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(args.model) if args.model else Path(scratch) / "run"
        if not args.model:
            subprocess.run([sys.executable, "-m", "classify", "train", "--data", args.data, "--out", str(model),
                            "--quiet"], check=True, capture_output=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        process = start_demo(model, port)
        try:
            latencies, errors, lock = [], [], threading.Lock()

            def client_loop(index: int) -> None:
                client = Client(url, verbose=False)
                for request in range(args.requests):
                    image = images[(index * args.requests + request) % len(images)]
                    started = time.perf_counter()
                    try:
                        result = client.predict(handle_file(str(image)), api_name="/predict")
                        assert len(result) == 5
                    except Exception as error:  # counted, not raised: the claim is about the error count
                        with lock:
                            errors.append(repr(error))
                        continue
                    with lock:
                        latencies.append(1000 * (time.perf_counter() - started))

            Client(url, verbose=False).predict(handle_file(str(images[0])), api_name="/predict")  # warm-up
            started = time.perf_counter()
            threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            single = []
            client = Client(url, verbose=False)
            for image in images[:20]:
                t = time.perf_counter()
                client.predict(handle_file(str(image)), api_name="/predict")
                single.append(1000 * (time.perf_counter() - t))
            if args.screenshot:
                screenshot(url, images[len(images) // 2], Path(args.screenshot))
        finally:
            process.terminate()
            process.wait(timeout=30)
    total = args.clients * args.requests
    rows = [[f"{args.clients} clients x {args.requests} requests", total, len(errors),
             f"{np.percentile(latencies, 50):.0f}", f"{np.percentile(latencies, 95):.0f}", f"{total / wall:.1f}"],
            ["1 client, one request at a time", len(single), 0, f"{np.percentile(single, 50):.0f}",
             f"{np.percentile(single, 95):.0f}", f"{len(single) / (sum(single) / 1000):.1f}"]]
    body = table(["load", "requests", "errors", "p50 ms", "p95 ms", "requests/s"], rows)
    body += ("\n\nRound trips through gradio_client (upload + queue + predict) on 127.0.0.1, food-dev valid JPEGs, "
             "lite0 bundle (224 px), CPU.")
    print(body)
    if errors:
        print("errors:", errors[:3])
    if not args.no_record:
        append("demo_latency.py (CPU, 127.0.0.1)", body, machine_line)


if __name__ == "__main__":
    main()
