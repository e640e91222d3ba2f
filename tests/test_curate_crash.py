"""Crash safety: SIGKILL scrape, dedup and export subprocesses at random points; the workspace stays consistent."""
import hashlib
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from curate.workspace import Workspace
from test_curate_importer import photo
from test_curate_scrape import server  # noqa: F401  (the loopback HTTP server fixture)


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "curate", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill_at_random(args, rng, low=0.3, high=2.5):
    proc = start(*args)
    time.sleep(rng.uniform(low, high))
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def snapshot(ws_root):
    """sha256 of every original file the manifest knows, by path."""
    with Workspace(ws_root) as ws:
        return {r.path: r.sha256 for r in ws.list_images()}


def assert_consistent(ws_root, known):
    with Workspace(ws_root) as ws:
        assert ws.integrity_problems(check_hashes=True) == []
        now = {r.path: r.sha256 for r in ws.list_images()}
    for path, sha in known.items():  # every original still there, byte-identical
        assert now.get(path) == sha
        assert hashlib.sha256((ws_root / path).read_bytes()).hexdigest() == sha
    return now


@pytest.mark.slow
def test_kill_scrape_dedup_export(tmp_path, server):  # noqa: F811
    base, _ = server
    rng = random.Random(7)
    src = tmp_path / "src"
    for k in range(40):
        photo(src / ("a" if k % 2 else "b") / f"{k}.jpg", seed=1000 + k, size=(384, 320))
    ws_root = tmp_path / "ws"
    assert subprocess.run([sys.executable, "-m", "curate", "--workspace", str(ws_root), "import", str(src)],
                          capture_output=True).returncode == 0
    known = snapshot(ws_root)
    assert len(known) == 40

    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{base}/img/{name}.jpg\n" for name in ("good1", "good2", "good3", "good4", "good5",
                                                                    "good6", "html", "truncated", "slow")))
    scrape_args = ["--workspace", str(ws_root), "scrape", "a", "--engine", "urls", "--urls", str(urls),
                   "--per-class", "30", "--threads", "2", "--timeout", "2"]
    for _ in range(3):
        kill_at_random(scrape_args, rng)
        known = assert_consistent(ws_root, known)
    done = subprocess.run([sys.executable, "-m", "curate", *scrape_args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr
    known = assert_consistent(ws_root, known)
    assert sum(1 for p in known if p.startswith("images/a/")) == 26  # 20 imported + the 6 good downloads

    dedup_args = ["--workspace", str(ws_root), "dedup", "--method", "hash", "--workers", "2"]
    for _ in range(3):
        kill_at_random(dedup_args, rng, 0.5, 2.0)
        known = assert_consistent(ws_root, known)
    assert subprocess.run([sys.executable, "-m", "curate", *dedup_args], capture_output=True).returncode == 0
    known = assert_consistent(ws_root, known)

    with Workspace(ws_root) as ws:
        for r in ws.list_images(status="pending"):
            ws.set_status(r.id, "accepted", log=False)
        n_accepted = ws.count(status="accepted")
    out = tmp_path / "out"
    export_args = ["--workspace", str(ws_root), "export", str(out), "--overwrite", "--balance", "60"]
    for _ in range(3):
        kill_at_random(export_args, rng, 0.5, 3.0)
        known = assert_consistent(ws_root, known)
        # all or nothing: OUT is absent or a complete export
        if out.exists():
            assert (out / "manifest.csv").is_file() and (out / "export.json").is_file()
    done = subprocess.run([sys.executable, "-m", "curate", *export_args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = (out / "manifest.csv").read_text().splitlines()[1:]
    assert len([r for r in rows if r.split(",")[-1] == ""]) == n_accepted
    assert not list(tmp_path.glob(".out.*"))
    assert_consistent(ws_root, known)
