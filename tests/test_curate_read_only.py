"""A workspace on a real read-only disk (a tmpfs remounted read-only): the commands that only read it (stats, export)
work and leave the manifest byte for byte as it was; those that write say so in one line, exit 2."""
import hashlib
import json
import sqlite3
import subprocess

import pytest

from curate import CurateError
from curate.workspace import Workspace
from test_curate_full_disk import noise_jpegs, one_line_error
from test_curate_importer import run_cli


def read_only_workspace(tmp_path, small_disk, schema=None):
    noise_jpegs(tmp_path / "src" / "pho", 8, side=256)  # one seed: eight different photos, moved to two classes
    (tmp_path / "src" / "ramen").mkdir()
    for i in range(4):
        (tmp_path / "src" / "pho" / f"{i}.jpg").rename(tmp_path / "src" / "ramen" / f"{i}.jpg")
    ws = small_disk(8192) / "ws"
    assert run_cli("--workspace", str(ws), "import", str(tmp_path / "src")).returncode == 0
    assert run_cli("--workspace", str(ws), "accept").returncode == 0
    if schema is not None:
        db = sqlite3.connect(ws / "manifest.sqlite")
        with db:
            db.execute("UPDATE schema_version SET version = ?", (schema,))
        db.close()  # an open file keeps the disk from being remounted read-only
    done = subprocess.run(["mount", "-o", "remount,ro", str(ws.parent)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only ({done.stderr.decode().strip()})")
    with pytest.raises(OSError):  # really read-only, also for root
        (ws / "probe").write_bytes(b"")
    return ws


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_stats_and_export_read_a_read_only_workspace(tmp_path, small_disk):
    ws = read_only_workspace(tmp_path, small_disk)
    before = digest(ws)
    out = run_cli("--workspace", str(ws), "stats", "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert {c: s["status"]["accepted"] for c, s in stats.items()} == {"pho": 4, "ramen": 4}
    out = run_cli("--workspace", str(ws), "export", str(tmp_path / "out"), "--split", "0.5", "0.5", "0")
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 8
    assert digest(ws) == before  # not one byte written, no -wal or -shm left
    for command in (["check"], ["undo"], ["accept"]):
        one_line_error(run_cli("--workspace", str(ws), *command), "read-only disk or folder: this command writes")
    with Workspace(ws, create=False, writes=False) as opened:
        assert opened.read_only and opened.count() == 8
        with pytest.raises(CurateError, match="read-only here"):
            opened.set_status(opened.list_images()[0].id, "rejected")
    assert digest(ws) == before


def test_a_read_only_workspace_of_another_schema_is_refused_in_one_line(tmp_path, small_disk):
    ws = read_only_workspace(tmp_path, small_disk, schema=3)
    one_line_error(run_cli("--workspace", str(ws), "stats"), "schema v3")
