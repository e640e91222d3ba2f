"""Tests for curate.workspace: the SQLite manifest, its schema, folder names and the undo log."""
import io
import sqlite3

import pytest
from PIL import Image

from curate import CurateError
from curate.workspace import MIGRATIONS, SCHEMA_VERSION, Workspace, folder_name


def jpeg(seed=0, size=(160, 140)):
    buf = io.BytesIO()
    Image.new("RGB", size, (seed % 256, (seed * 7) % 256, (seed * 13) % 256)).save(buf, "JPEG")
    return buf.getvalue()


def test_add_and_read_back_record(tmp_path):
    data = jpeg(1)
    with Workspace(tmp_path / "ws") as ws:
        rec = ws.add_image(data, "Pad Thai", source="urls", query="pad thai food", source_url="http://x/1.jpg")
        assert rec.category == "Pad Thai" and rec.status == "pending" and rec.format == "JPEG"
        assert rec.path.startswith("images/pad_thai/") and rec.path.endswith(".jpg")
        assert ws.abspath(rec).read_bytes() == data
        assert (rec.width, rec.height, rec.bytes) == (160, 140, len(data))
        assert rec.flags == () and rec.crop is None and rec.duplicate_of is None
        # Same bytes again: not stored twice, in any category; the other URL is remembered as known.
        assert ws.add_image(data, "Other", source="import") is None
        assert not ws.has_url("http://x/2.jpg")
        assert ws.add_image(data, "Pad Thai", source="urls", source_url="http://x/2.jpg") is None
        assert ws.count() == 1 and ws.has_url("http://x/1.jpg") and ws.has_url("http://x/2.jpg")
        assert ws.list_images(source_url="http://x/2.jpg") == []  # a known URL, not an image of its own
    # Reopen: persisted, schema versioned, WAL.
    with Workspace(tmp_path / "ws", create=False) as ws:
        assert ws.get(rec.id) == rec
        assert ws.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "ws" / "manifest.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_missing_workspace_is_clear_error(tmp_path):
    with pytest.raises(CurateError, match="no workspace"):
        Workspace(tmp_path / "nope", create=False)


def test_newer_schema_refused(tmp_path):
    with Workspace(tmp_path):
        pass
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(CurateError, match="newer"):
        Workspace(tmp_path)


def test_older_schema_is_migrated_in_place(tmp_path):
    """A workspace written by the first release (schema v1) opens, keeps its rows and gains the newer tables."""
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    db.executescript(MIGRATIONS[1] + """;
        CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);
        INSERT INTO categories VALUES ('Ramen', 'ramen', '2026-01-01');
        INSERT INTO images (path, category, source, source_url, sha256, width, height, bytes, format, created_at,
                            updated_at)
        VALUES ('images/ramen/a.jpg', 'Ramen', 'bing', 'http://x/a.jpg', 'abc', 10, 10, 100, 'JPEG', 'x', 'x');""")
    db.close()
    with Workspace(tmp_path, create=False) as ws:
        assert ws.schema_version == SCHEMA_VERSION == 4
        [rec] = ws.list_images()
        assert rec.category == "Ramen" and rec.source_url == "http://x/a.jpg" and ws.has_url("http://x/a.jpg")
        assert not ws.has_url("http://x/b.jpg")


@pytest.mark.parametrize("name,folder", [("Pad Thai", "pad_thai"), ("phở", "phở"), ("../../etc", "etc"),
                                         ("..", "category"), ("a/b\\c", "a_b_c"), ("CON", "con_")])
def test_folder_name_is_safe(name, folder):
    assert folder_name(name) == folder


def test_categories_that_clash_get_distinct_folders(tmp_path):
    with Workspace(tmp_path) as ws:
        names = ["Pad Thai", "pad thai", "PAD-THAI", "Fried Food", "../x"]
        folders = [ws.ensure_category(n) for n in names]
        assert folders == ["pad_thai", "pad_thai_2", "pad_thai_3", "fried_food", "x"]
        assert ws.ensure_category("Pad Thai") == "pad_thai"  # stable
        assert list(ws.categories()) == names


def test_status_crop_relabel_and_undo(tmp_path):
    with Workspace(tmp_path) as ws:
        a = ws.add_image(jpeg(1), "Ramen", source="import")
        b = ws.add_image(jpeg(2), "Ramen", source="import")
        assert ws.set_status(a.id, "accepted").status == "accepted"
        assert ws.set_crop(a.id, (10, 5, 500, 100)).crop == (10, 5, 160, 100)  # clipped to the image
        assert ws.relabel(a.id, "Pho").category == "Pho"
        assert ws.set_status(b.id, "duplicate", duplicate_of=a.id).duplicate_of == a.id
        assert [d["action"] for d in ws.decisions()] == ["status", "relabel", "crop", "status"]
        assert ws.undo()[0].duplicate_of is None and ws.get(b.id).status == "pending"
        assert ws.undo()[0].category == "Ramen"
        assert ws.undo()[0].crop is None
        assert ws.undo()[0].status == "pending"
        assert ws.undo() == []
        with pytest.raises(CurateError, match="unknown status"):
            ws.set_status(a.id, "maybe")
        with pytest.raises(CurateError, match="empty"):
            ws.set_crop(a.id, (50, 50, 50, 80))
        with pytest.raises(CurateError, match="no image"):
            ws.set_status(999, "accepted")


def test_a_batch_is_undone_as_one(tmp_path):
    with Workspace(tmp_path) as ws:
        ids = [ws.add_image(jpeg(k), "Ramen", source="import").id for k in range(5)]
        ws.set_status(ids[0], "rejected")
        with ws.batch():
            for image_id in ids[1:]:
                ws.set_status(image_id, "accepted")
            with ws.batch():  # nested: the same bulk action
                ws.relabel(ids[4], "Pho")
        ws.set_status(ids[1], "rejected")  # after the batch: its own decision
        batches = [d["batch"] for d in ws.decisions()]
        assert batches[0] is None and len(set(batches[1:6])) == 1 and batches[1] is not None and batches[6] is None
        assert [r.id for r in ws.undo()] == [ids[1]] and ws.get(ids[1]).status == "accepted"
        restored = ws.undo()  # the whole batch, most recent first
        assert [r.id for r in restored] == [ids[4], ids[4], ids[3], ids[2], ids[1]]
        assert [ws.get(i).status for i in ids] == ["rejected"] + ["pending"] * 4 and ws.get(ids[4]).category == "Ramen"
        assert [r.id for r in ws.undo()] == [ids[0]] and ws.undo() == []
        with pytest.raises(CurateError, match="no image"):
            with ws.batch():  # a failed bulk action leaves nothing behind
                ws.set_status(ids[2], "accepted")
                ws.set_status(10_000, "accepted")
        assert ws.get(ids[2]).status == "pending" and ws.undo() == []


def test_list_filters_and_stats(tmp_path):
    with Workspace(tmp_path) as ws:
        ids = [ws.add_image(jpeg(i), "Ramen" if i < 3 else "Pho", source="import", flags=("blurry",) if i == 1 else ()).id
               for i in range(5)]
        ws.set_status(ids[0], "accepted")
        ws.set_flags(ids[4], ["dark", "grayscale"])
        assert [r.id for r in ws.list_images(category="Ramen")] == ids[:3]
        assert [r.id for r in ws.list_images(status="accepted")] == [ids[0]]
        assert [r.id for r in ws.list_images(status=["pending"], category="Pho")] == ids[3:]
        assert [r.id for r in ws.list_images(flag="blurry")] == [ids[1]]
        assert [r.id for r in ws.list_images(flag="gray")] == []  # whole flags only
        stats = ws.stats()
        assert stats["Ramen"] == {"total": 3, "status": {"pending": 2, "accepted": 1, "rejected": 0, "duplicate": 0},
                                  "flags": {"blurry": 1}}
        assert stats["Pho"]["flags"] == {"dark": 1, "grayscale": 1}


def test_hashes_roundtrip_full_64_bits(tmp_path):
    with Workspace(tmp_path) as ws:
        a = ws.add_image(jpeg(1), "Ramen", source="import")
        big = (1 << 64) - 3
        ws.set_hashes("phash", {a.id: big})
        ws.set_hashes("dhash", {a.id: 1 << 63})
        assert ws.get(a.id).phash == big
        assert ws.hashes("phash") == {a.id: big} and ws.hashes("dhash") == {a.id: 1 << 63}


def test_failed_transaction_rolls_back(tmp_path):
    with Workspace(tmp_path) as ws:
        a = ws.add_image(jpeg(1), "Ramen", source="import")
        with pytest.raises(RuntimeError):
            with ws.transaction() as db:
                db.execute("UPDATE images SET status = 'accepted' WHERE id = ?", (a.id,))
                raise RuntimeError("boom")
        assert ws.get(a.id).status == "pending"
        assert ws.integrity_problems(check_hashes=True) == []
        ws.abspath(a).unlink()
        assert ws.integrity_problems() == [f"image {a.id}: file {a.path} is missing"]
