"""A disk that fills up mid-command, on a real tmpfs: one line on stderr, exit 2, a manifest that still matches the
files, nothing half-written left behind, and the same command carries on once there is room again."""
import numpy as np
from PIL import Image

from conftest import fill_disk
from curate.workspace import Workspace
from test_curate_importer import run_cli
from test_curate_scrape import server  # noqa: F401  (the local HTTP server fixture)


def noise_jpegs(folder, n, side=300):
    """n JPEGs of random pixels (about 80 KiB each: they do not compress)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)


def stored(ws_root):
    """Images in the manifest, after checking that each has its file and no temporary file is left."""
    with Workspace(ws_root, create=False) as ws:
        records = ws.list_images()
        assert all(ws.abspath(r).is_file() for r in records)
    assert not list(ws_root.rglob(".tmp-*"))
    return len(records)


def one_line_error(out, text):
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("curate:")]
    assert len(errors) == 1 and text in errors[0], out.stderr


def test_import_stops_cleanly_and_carries_on(tmp_path, small_disk):
    noise_jpegs(tmp_path / "src" / "pho", 12)
    disk = small_disk(4096)
    ws = disk / "ws"
    assert run_cli("--workspace", str(ws), "import", str(tmp_path / "src"), "--category", "pho").returncode == 0
    assert stored(ws) == 12
    noise_jpegs(tmp_path / "more" / "pho", 12, side=310)
    fill_disk(disk, leave_kib=400)
    out = run_cli("--workspace", str(ws), "import", str(tmp_path / "more"), "--category", "pho")
    one_line_error(out, "No space left on device")
    partial = stored(ws)
    assert 12 < partial < 24  # some of the new images made it, each with its file
    (disk / "filler").unlink()
    out = run_cli("--workspace", str(ws), "import", str(tmp_path / "more"), "--category", "pho")
    assert out.returncode == 0, out.stderr
    assert stored(ws) == 24


def test_export_leaves_nothing_half_written(tmp_path, small_disk):
    noise_jpegs(tmp_path / "src" / "pho", 10)
    noise_jpegs(tmp_path / "src" / "ramen", 10, side=310)
    ws = tmp_path / "ws"
    assert run_cli("--workspace", str(ws), "import", str(tmp_path / "src")).returncode == 0
    assert run_cli("--workspace", str(ws), "accept").returncode == 0
    disk = small_disk(4096)
    fill_disk(disk, leave_kib=600)
    out = run_cli("--workspace", str(ws), "export", str(disk / "export"))
    one_line_error(out, "No space left on device")
    assert [p.name for p in disk.iterdir()] == ["filler"]  # neither the export nor its hidden work folder
    (disk / "filler").unlink()
    out = run_cli("--workspace", str(ws), "export", str(disk / "export"))
    assert out.returncode == 0, out.stderr
    assert len(list((disk / "export").rglob("*.jpg"))) == 20


def test_scrape_stops_when_the_workspace_disk_is_full(tmp_path, small_disk, server):  # noqa: F811
    base, _ = server
    urls = tmp_path / "urls.tsv"
    urls.write_text("".join(f"Pho\t{base}/img/good{k}.jpg\n" for k in range(1, 7)))
    disk = small_disk(4096)
    ws = disk / "ws"
    noise_jpegs(tmp_path / "seed" / "pho", 1)
    assert run_cli("--workspace", str(ws), "import", str(tmp_path / "seed"), "--category", "Pho").returncode == 0
    fill_disk(disk, leave_kib=120)
    out = run_cli("--workspace", str(ws), "scrape", "Pho", "--engine", "urls", "--urls", str(urls), "--per-class", "7",
                  "--timeout", "2")
    one_line_error(out, "re-run to carry on")
    assert "No space left on device" in out.stderr or "full" in out.stderr
    partial = stored(ws)
    (disk / "filler").unlink()
    out = run_cli("--workspace", str(ws), "scrape", "Pho", "--engine", "urls", "--urls", str(urls), "--per-class", "7",
                  "--timeout", "2")
    assert out.returncode == 0, out.stderr
    assert stored(ws) == 7 > partial


def test_thumbnails_on_a_full_disk_are_missing_not_errors(tmp_path, small_disk):
    from curate.thumbnails import cached_copy

    noise_jpegs(tmp_path / "src" / "pho", 2)
    disk = small_disk(2048)
    assert run_cli("--workspace", str(disk / "ws"), "import", str(tmp_path / "src"), "--category", "pho").returncode == 0
    with Workspace(disk / "ws", create=False) as ws:  # opened while there is room, as the review UI would be
        record = ws.list_images()[0]
        fill_disk(disk, leave_kib=0)
        assert cached_copy(ws, record, 256) is None  # the grid shows it as missing; the review goes on
        assert not list((disk / "ws").rglob(".tmp-*"))
        (disk / "filler").unlink()
        assert cached_copy(ws, record, 256).is_file()
