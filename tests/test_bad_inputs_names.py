"""Bad input to curate found by an audit (2026-12-04): names that are not UTF-8, a symbolic link loop, a FIFO named in
a feedback log, an unreadable class folder, templates and numbers out of range, a --rename that names no class, a
flag that does not exist, originals gone before an export, a damaged manifest page. Each case checks the exit
code, the one-line message and what is on disk afterwards."""
import csv
import hashlib
import os
import shutil
import sqlite3
import zipfile
from pathlib import Path

import pytest

from badinput import assert_refused, run, tree_digest
from curate.workspace import Workspace
from test_curate_importer import photo

LATIN1 = os.fsdecode(b"caf\xe9")  # a name written in Latin-1: Python reads the byte 0xe9 as a lone surrogate


def tree(root: Path, classes=("apple_pie", "pho"), per_class=3) -> Path:
    for c, name in enumerate(classes):
        for k in range(per_class):
            photo(root / "train" / name / f"{k}.jpg", seed=100 * c + k)
    return root


def imported(ws_dir: Path) -> dict[str, int]:
    if not (ws_dir / "manifest.sqlite").exists():
        return {}
    with Workspace(ws_dir, create=False) as ws:
        return {c: s["total"] for c, s in ws.stats().items() if s["total"]}


def test_a_class_folder_named_in_another_encoding_is_refused_before_anything_is_added(tmp_path):
    src = tree(tmp_path / "src")
    os.rename(src / "train" / "pho", src / "train" / LATIN1)
    done = run("curate", "--workspace", tmp_path / "ws", "import", src)
    assert_refused(done, "not valid UTF-8", r"caf\xe9", "--rename")
    assert imported(tmp_path / "ws") == {}
    # the way out the message names: --rename takes the name as the shell gives it
    done = run("curate", "--workspace", tmp_path / "ws", "import", src, "--rename", f"{LATIN1}=cafe")
    assert done.returncode == 0, done.stderr
    assert imported(tmp_path / "ws") == {"apple_pie": 3, "cafe": 3}


def test_a_file_named_in_another_encoding_is_imported_with_its_name_escaped_and_the_rest_follow(tmp_path):
    src = tree(tmp_path / "src")
    photo(src / "train" / "pho" / f"{LATIN1}.jpg", seed=999)
    done = run("curate", "--workspace", tmp_path / "ws", "import", src)
    assert done.returncode == 0, done.stderr
    assert imported(tmp_path / "ws") == {"apple_pie": 3, "pho": 4}
    with Workspace(tmp_path / "ws") as ws:
        origins = {Path(r.source_url).name for r in ws.list_images(category="pho")}
        stored = sum(1 for _ in (tmp_path / "ws" / "images").rglob("*.jpg"))
    assert r"caf\xe9.jpg" in origins
    assert stored == 7  # no copy left behind without its row
    again = run("curate", "--workspace", tmp_path / "ws", "import", src)  # re-running adds nothing twice
    assert again.returncode == 0 and imported(tmp_path / "ws") == {"apple_pie": 3, "pho": 4}


def test_a_category_argument_in_another_encoding_is_one_line(tmp_path):
    run("curate", "--workspace", tmp_path / "ws", "import", tree(tmp_path / "src"))
    assert_refused(run("curate", "--workspace", tmp_path / "ws", "accept", "--category", LATIN1), "UTF-8")


def test_a_zip_whose_entry_claims_utf8_but_is_not_is_refused(tmp_path):
    src = tmp_path / "bad.zip"
    with zipfile.ZipFile(src, "w") as archive:
        archive.writestr("pho/a.jpg", photo(tmp_path / "a.jpg", 1).read_bytes())
    data = src.read_bytes()
    # set the UTF-8 flag (bit 11) and put an invalid byte in the name, in the central directory's copy of it
    at = data.rindex(b"PK\x01\x02")
    flags = int.from_bytes(data[at + 8:at + 10], "little") | 0x800
    name_at = data.index(b"pho/a.jpg", at)
    data = data[:at + 8] + flags.to_bytes(2, "little") + data[at + 10:name_at] + b"ph\xff" + data[name_at + 3:]
    src.write_bytes(data)
    assert_refused(run("curate", "--workspace", tmp_path / "ws", "import", src), "zip", "UTF-8")


def test_a_workspace_at_a_path_in_another_encoding_exports(tmp_path):
    ws_dir = tmp_path / LATIN1
    run("curate", "--workspace", ws_dir, "import", tree(tmp_path / "src"))
    run("curate", "--workspace", ws_dir, "accept")
    done = run("curate", "--workspace", ws_dir, "export", tmp_path / "out", "--split", "0.5", "0.5", "0")
    assert done.returncode == 0, done.stderr
    assert r"caf\\xe9" in (tmp_path / "out" / "export.json").read_text(encoding="utf-8")


def test_a_symbolic_link_loop_as_workspace_or_export_folder_is_one_line(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert_refused(run("curate", "--workspace", loop, "stats"), "cannot be resolved")
    run("curate", "--workspace", tmp_path / "ws", "import", tree(tmp_path / "src"))
    run("curate", "--workspace", tmp_path / "ws", "accept")
    assert_refused(run("curate", "--workspace", tmp_path / "ws", "export", loop), "cannot be resolved")


@pytest.mark.parametrize("query", ["{", "{foo} food", "{0}", "{category.x}"])
def test_a_query_template_with_a_stray_brace_is_refused_before_any_request(tmp_path, query):
    urls = tmp_path / "urls.txt"
    urls.write_text("http://127.0.0.1:9/a.jpg\n")
    done = run("curate", "--workspace", tmp_path / "ws", "scrape", "pizza", "--engine", "urls", "--urls", urls,
               "--query", query)
    assert_refused(done, "--query", "{category}", code=2)
    assert not (tmp_path / "ws").exists()


def test_a_literal_brace_in_a_query_is_written_doubled():
    from curate.scrape import check_query

    assert check_query("{{best}} {category}").format(category="pho") == "{best} pho"


@pytest.mark.parametrize("args, words", [
    (["dedup", "--workers", "-4"], ["--workers", "1"]),
    (["dedup", "--workers", "1000"], ["--workers", "64"]),
    (["dedup", "--threshold", "-1"], ["--threshold", "0"]),
    (["export", "OUT", "--balance", "100000000"], ["--balance", "10000"]),
    (["export", "OUT", "--exclude-flag", "BLURRY"], ["--exclude-flag", "blurry"]),
    (["suspects", "--top", "0"], ["--top", "1"]),
])
def test_numbers_out_of_range_and_unknown_flags_are_usage_errors(tmp_path, args, words):
    run("curate", "--workspace", tmp_path / "ws", "import", tree(tmp_path / "src"))
    before = tree_digest(tmp_path / "ws")
    done = run("curate", "--workspace", tmp_path / "ws", *[str(tmp_path / a) if a == "OUT" else a for a in args])
    assert_refused(done, *words, code=2)
    assert not (tmp_path / "OUT").exists()
    assert tree_digest(tmp_path / "ws") == before


def test_the_library_export_refuses_an_unknown_flag_too(tmp_path):
    from curate import CurateError
    from curate.export import ExportConfig, export

    run("curate", "--workspace", tmp_path / "ws", "import", tree(tmp_path / "src"))
    with Workspace(tmp_path / "ws") as ws, pytest.raises(CurateError, match="unknown quality flag"):
        export(ws, tmp_path / "out", ExportConfig(exclude_flags=("blury",)))


def test_a_rename_that_names_no_class_or_an_empty_name_adds_nothing(tmp_path):
    src = tree(tmp_path / "src")
    done = run("curate", "--workspace", tmp_path / "ws", "import", src, "--rename", "aple_pie=pie")
    assert_refused(done, "aple_pie", "no class", "apple_pie")
    assert imported(tmp_path / "ws") == {}
    done = run("curate", "--workspace", tmp_path / "ws", "import", src, "--rename", "pho=  ")
    assert_refused(done, "empty")
    assert imported(tmp_path / "ws") == {}


def test_a_missing_source_makes_no_workspace(tmp_path):
    assert_refused(run("curate", "--workspace", tmp_path / "ws", "import", tmp_path / "nowhere"), "does not exist")
    assert not (tmp_path / "ws").exists()


def test_a_fifo_named_in_a_feedback_log_is_counted_not_waited_on(tmp_path):
    folder = tmp_path / "feedback"
    photo(folder / "pho" / "good.jpg", 5)
    os.mkfifo(folder / "pho" / "f.jpg")
    good = hashlib.sha256((folder / "pho" / "good.jpg").read_bytes()).hexdigest()
    from classify.feedback import COLUMNS

    with open(folder / "feedback.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerow(["2026-12-04T00:00:00Z", "pho/good.jpg", good, "pho", "0.9", "", "pho", "right"])
        writer.writerow(["2026-12-04T00:00:01Z", "pho/f.jpg", "0" * 64, "pho", "0.9", "", "pho", "right"])
    done = run("curate", "--workspace", tmp_path / "ws", "import", folder, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "not_a_file 1" in done.stdout
    assert imported(tmp_path / "ws") == {"pho": 1}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder: permissions cannot be tested as root")
def test_an_unreadable_class_folder_is_counted(tmp_path):
    src = tree(tmp_path / "src")
    (src / "train" / "pho").chmod(0)
    try:
        done = run("curate", "--workspace", tmp_path / "ws", "import", src)
    finally:
        (src / "train" / "pho").chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert "unreadable_folder 1" in done.stdout


def test_an_unreadable_folder_is_counted_as_root_too(tmp_path, monkeypatch):
    """As root every folder reads, so a folder that cannot be listed is made by failing its listing."""
    from curate import importer

    src = tree(tmp_path / "src")
    real = importer.os.scandir
    monkeypatch.setattr(importer.os, "scandir", lambda p: (_ for _ in ()).throw(PermissionError(13, "denied", str(p)))
                        if Path(p).name == "pho" else real(p))
    items, skipped = importer.find_items(str(src))
    assert skipped == {"unreadable_folder": 1}
    assert {item.category for item in items} == {"apple_pie"}


def test_an_original_gone_before_an_export_is_refused_before_anything_is_written(tmp_path):
    run("curate", "--workspace", tmp_path / "ws", "import", tree(tmp_path / "src", per_class=5))
    run("curate", "--workspace", tmp_path / "ws", "accept")
    with Workspace(tmp_path / "ws") as ws:
        first = ws.list_images()[0]
        ws.abspath(first).unlink()
    done = run("curate", "--workspace", tmp_path / "ws", "export", tmp_path / "out")
    assert_refused(done, "lost their file", "curate check", "--exclude-flag unreadable")
    assert not (tmp_path / "out").exists()
    assert run("curate", "--workspace", tmp_path / "ws", "check").returncode == 0
    done = run("curate", "--workspace", tmp_path / "ws", "export", tmp_path / "out", "--exclude-flag", "unreadable",
               "--split", "0.5", "0.5", "0")
    assert done.returncode == 0, done.stderr


def test_a_damaged_manifest_page_is_called_damaged_not_retryable(tmp_path):
    run("curate", "--workspace", tmp_path / "ws", "import", tree(tmp_path / "src", per_class=30))
    manifest = tmp_path / "ws" / "manifest.sqlite"
    with sqlite3.connect(manifest) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert pages > 3
    data = bytearray(manifest.read_bytes())
    for at in range(page, pages * page, page):  # every page but the header's: the schema still reads
        data[at:at + 64] = b"\xa5" * 64
    manifest.write_bytes(bytes(data))
    kept = manifest.read_bytes()
    done = run("curate", "--workspace", tmp_path / "ws", "stats")
    assert_refused(done, "damaged")
    assert "re-run" not in done.stderr
    assert manifest.read_bytes() == kept
    shutil.rmtree(tmp_path / "ws")
