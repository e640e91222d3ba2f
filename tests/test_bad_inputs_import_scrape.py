"""Bad input to `curate import` and `curate scrape`, end to end in real subprocesses: zip bombs and lying zip
directories, damaged, encrypted and path-escaping zip entries, files that are no images, a trickling server, URL
lists with non-web lines, out-of-range numbers and non-UTF-8 files. Each case checks the exit code, the message,
that no traceback shows, and what is on disk afterwards."""
import html
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from badinput import ROOT, assert_refused, run, run_measured, tree_digest
from curate.images import MAX_FILE_BYTES
from curate.workspace import Workspace
from test_curate_importer import photo
from test_curate_scrape import encoded

# A memory bound that reading a big entry whole would break: the import process itself stays well under 100 MB
# (64 MB measured), plus one capped read of MAX_FILE_BYTES; the test entries are far larger than this.
PEAK_RSS_LIMIT_MB = 100 + MAX_FILE_BYTES / 2**20
BIG_ENTRY_MB = 400


def jpeg(seed) -> bytes:
    return encoded(seed, "JPEG")


def images_in(ws_dir) -> dict[str, list[str]]:
    """category -> sorted origin names of the images a workspace holds ({} when there is no workspace)."""
    if not (Path(ws_dir) / "manifest.sqlite").exists():
        return {}
    with Workspace(ws_dir) as ws:
        out: dict[str, list[str]] = {}
        for r in ws.list_images():
            out.setdefault(r.category, []).append(r.source_url.rsplit("!", 1)[-1])
        return {k: sorted(v) for k, v in out.items()}


def import_with_peak_rss(source, ws_dir) -> tuple[subprocess.CompletedProcess, float]:
    """`curate import` in a real subprocess and its peak resident memory in MB."""
    done, peak_kib = run_measured("curate", "--workspace", ws_dir, "import", source)
    return done, peak_kib / 1024


def row(stdout: str, category: str) -> str:
    line = next((l for l in stdout.splitlines() if l.startswith(category)), None)
    assert line is not None, stdout
    return line


def add_big_entry(archive: zipfile.ZipFile, name: str, megabytes: int) -> None:
    """A highly compressible entry: `megabytes` MB of zeros, about 1/200 of that on disk."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w") as f:
        block = b"\0" * 2**20
        for _ in range(megabytes):
            f.write(block)


def zip_with(path: Path, entries: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in entries.items():
            z.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


# ---------------------------------------------------------------------------------------------------- import: size


def test_zip_bomb_entry_is_refused_without_reading_it_whole(tmp_path):
    source = tmp_path / "bomb.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("set/ramen/0.jpg", jpeg(1))
        z.writestr("set/ramen/1.jpg", jpeg(2))
        add_big_entry(z, "set/ramen/big.jpg", BIG_ENTRY_MB)
    assert source.stat().st_size < 5_000_000  # a few MB that inflate to 400 MB
    before = tree_digest(tmp_path)
    done, peak_mb = import_with_peak_rss(source, tmp_path / "ws")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "file_too_big 1" in row(done.stdout, "ramen")
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"import peaked at {peak_mb:.0f} MB for a {BIG_ENTRY_MB} MB entry"
    assert images_in(tmp_path / "ws") == {"ramen": ["set/ramen/0.jpg", "set/ramen/1.jpg"]}
    assert {k: v for k, v in tree_digest(tmp_path).items() if not k.startswith(("ws", "import."))} == before


def test_zip_directory_that_understates_an_entry_is_not_trusted(tmp_path):
    """The central directory says 5,000 bytes; the entry inflates to 400 MB: the read stops, the entry counts."""
    source = tmp_path / "liar.zip"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        add_big_entry(z, "ramen/a_liar.jpg", BIG_ENTRY_MB)
        z.writestr("ramen/b_good.jpg", jpeg(3))
    raw = bytearray(source.read_bytes())
    central = raw.index(b"PK\x01\x02")  # the first central directory record: a_liar.jpg
    raw[central + 24:central + 28] = (5000).to_bytes(4, "little")  # uncompressed size
    source.write_bytes(bytes(raw))
    assert zipfile.ZipFile(source).getinfo("ramen/a_liar.jpg").file_size == 5000
    done, peak_mb = import_with_peak_rss(source, tmp_path / "ws")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "damaged 1" in row(done.stdout, "ramen")
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"import peaked at {peak_mb:.0f} MB"
    assert images_in(tmp_path / "ws") == {"ramen": ["ramen/b_good.jpg"]}


def test_folder_with_a_multi_gigabyte_file(tmp_path):
    src = tmp_path / "src" / "ramen"
    photo(src / "0.jpg", seed=4)
    with open(src / "huge.jpg", "wb") as f:  # 3 GiB, sparse: nothing on disk, but a whole read would be 3 GiB
        f.truncate(3 * 2**30)
    stat = (src / "huge.jpg").stat()  # hashing 3 GiB would be the slow part: the source is compared by its stat
    done, peak_mb = import_with_peak_rss(tmp_path / "src", tmp_path / "ws")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "file_too_big 1" in row(done.stdout, "ramen")
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"import peaked at {peak_mb:.0f} MB"
    assert images_in(tmp_path / "ws") == {"ramen": [str(src / "0.jpg")]}
    after = (src / "huge.jpg").stat()
    assert (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


# ------------------------------------------------------------------------------------------------ import: damage


def damaged_zip(path: Path) -> Path:
    """ramen/0_crc.jpg (stored, one byte flipped: bad CRC), ramen/1_deflate.jpg (deflated, stream corrupted),
    ramen/2_locked.jpg (encrypted flag set), then three good entries that sort after them."""
    good = {f"ramen/{k}_good.jpg": jpeg(10 + k) for k in (3, 4, 5)}
    crc, deflate, locked = jpeg(20), jpeg(21), jpeg(22)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ramen/0_crc.jpg", crc, compress_type=zipfile.ZIP_STORED)
        z.writestr("ramen/1_deflate.jpg", deflate, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("ramen/2_locked.jpg", locked, compress_type=zipfile.ZIP_STORED)
        for name, data in good.items():
            z.writestr(name, data)
        offsets = {i.filename: i.header_offset for i in z.infolist()}
    raw = bytearray(path.read_bytes())
    at = raw.index(crc[500:600]) + 50  # inside the stored JPEG's data
    raw[at] ^= 0xFF
    start = offsets["ramen/1_deflate.jpg"] + 30 + len("ramen/1_deflate.jpg")
    for k in range(40, 240, 7):  # scribble over the deflate stream
        raw[start + k] ^= 0x5A
    name = b"ramen/2_locked.jpg"  # set the encrypted bit in its local header (flags at 6) and central record (at 8)
    raw[offsets[name.decode()] + 6] |= 0x01
    central = raw.index(b"PK\x01\x02")
    while raw[central + 46:central + 46 + len(name)] != name:
        central = raw.index(b"PK\x01\x02", central + 1)
    raw[central + 8] |= 0x01
    path.write_bytes(bytes(raw))
    return path


def test_damaged_and_encrypted_zip_entries_are_counted_and_the_rest_imported(tmp_path):
    source = damaged_zip(tmp_path / "damaged.zip")
    digest = tree_digest(tmp_path)
    for attempt in range(2):  # a re-run neither fails on the bad entries nor loses the good ones
        done = run("curate", "--workspace", tmp_path / "ws", "import", source)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        line = row(done.stdout, "ramen")
        assert "damaged 2" in line and "encrypted 1" in line, line
        assert line.split()[1:3] == (["3", "0"] if attempt == 0 else ["0", "3"]), line  # added, already present
        assert images_in(tmp_path / "ws") == {"ramen": [f"ramen/{k}_good.jpg" for k in (3, 4, 5)]}
    assert {k: v for k, v in tree_digest(tmp_path).items() if not k.startswith("ws")} == digest


def test_zip_that_is_no_zip_is_refused(tmp_path):
    source = tmp_path / "fake.zip"
    source.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    done = run("curate", "--workspace", tmp_path / "ws", "import", source)
    assert_refused(done, "cannot open", "as a zip file")
    assert images_in(tmp_path / "ws") == {} and source.stat().st_size == 2004


# ------------------------------------------------------------------------------------------------- import: paths


def test_absolute_and_dotdot_zip_entries_are_refused_and_counted(tmp_path):
    (tmp_path / "inner").mkdir()
    source = zip_with(tmp_path / "inner" / "escape.zip", {
        "/abs/cls/y.jpg": jpeg(30), "../evil/cls/z.jpg": jpeg(31), "ramen/../../x.jpg": jpeg(32),
        "C:/win/cls/w.jpg": jpeg(33), "..\\evil2\\cls\\v.jpg": jpeg(34),
        "ramen/ok.jpg": jpeg(35), "pho/ok.jpg": jpeg(36)})
    done = run("curate", "--workspace", tmp_path / "ws", "import", source, cwd=tmp_path / "inner")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "unsafe_path 5" in row(done.stdout, "(no category: skipped)")
    assert images_in(tmp_path / "ws") == {"pho": ["pho/ok.jpg"], "ramen": ["ramen/ok.jpg"]}
    assert not any(n in {"/", "..", "abs", "evil", "win", "C:"} for n in images_in(tmp_path / "ws"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inner", "ws"]  # nothing written beside the zip's folder
    assert not (Path("/abs").exists() and (Path("/abs") / "cls").exists())


# ----------------------------------------------------------------------------------------------- import: skipped


def test_every_skipped_file_is_counted_with_its_reason(tmp_path):
    src = tmp_path / "src"
    photo(src / "ramen" / "0.jpg", seed=40)
    photo(src / "ramen" / "1.jpg", seed=41)
    (src / "ramen" / "copy of 0.jpg").write_bytes((src / "ramen" / "0.jpg").read_bytes())  # exact duplicate
    (src / "ramen" / "notes.txt").write_text("not an image")
    (src / "ramen" / "photo.jxl").write_bytes(b"\xff\x0a" + bytes(100))  # JPEG XL: known by name, not decoded
    photo(src / "ramen" / ".hidden.jpg", seed=42)
    photo(src / ".thumbs" / "cls" / "t.jpg", seed=43)
    os.mkfifo(src / "ramen" / "pipe.jpg")  # would block a reader for ever
    done = run("curate", "--workspace", tmp_path / "ws", "import", src, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert row(done.stdout, "ramen").split()[1:4] == ["2", "0", "1"], done.stdout  # added, already present, duplicate
    skipped = row(done.stdout, "(no category: skipped)")
    for reason in ("hidden 2", "no_image_suffix 1", "unsupported_format 1", "not_a_file 1"):
        assert reason in skipped, skipped
    assert images_in(tmp_path / "ws") == {"ramen": sorted([str(src / "ramen" / "0.jpg"), str(src / "ramen" / "1.jpg")])}
    assert (src / "ramen" / "notes.txt").read_text() == "not an image" and (src / "ramen" / "pipe.jpg").is_fifo()


def test_source_with_no_image_at_all_says_what_it_skipped(tmp_path):
    source = zip_with(tmp_path / "docs.zip", {"a/readme.txt": b"hi", "a/.DS_Store": b"x", "/etc/cls/p.jpg": b"x"})
    done = run("curate", "--workspace", tmp_path / "ws", "import", source)
    assert_refused(done, "contains no image files", "hidden 1", "no_image_suffix 1", "unsafe_path 1")
    assert images_in(tmp_path / "ws") == {}


# ------------------------------------------------------------------------------------------------------- scrape


@pytest.fixture(scope="module")
def server():
    """/img/good<n>.jpg, /img/html.jpg, /trickle.jpg (1 byte every 0.2 s, forever) and a Bing-style /search whose
    results are file://, ftp:// and javascript: URLs before good ones."""
    files = {f"good{k}": jpeg(50 + k) for k in range(6)}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            port = self.server.server_address[1]
            if self.path.startswith("/trickle"):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                try:
                    for _ in range(100_000):
                        self.wfile.write(b"\xff")
                        self.wfile.flush()
                        time.sleep(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            if self.path.startswith("/endless"):  # no Content-Length: the body ends when the server closes
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(2 * MAX_FILE_BYTES // 2**20):
                        self.wfile.write(b"\0" * 2**20)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            if self.path.startswith("/search"):
                # icrawler's Bing parser only takes URLs ending in .jpg
                urls = ["file:///etc/passwd.jpg", "ftp://127.0.0.1/x.jpg", "javascript:alert(1).jpg",
                        "file:///dev/zero.jpg", "file:///etc/hostname.jpg"]
                urls += [f"http://127.0.0.1:{port}/img/good{k}.jpg" for k in range(3)]
                divs = "".join('<div class="imgpt"><a class="iusc" m="{}">x</a></div>'.format(
                    html.escape(json.dumps({"murl": u}, separators=(",", ":"))))
                    for u in (urls if "first=0" in self.path else []))
                body = f"<html><body>{divs}</body></html>".encode()
            elif self.path.startswith("/img/") and self.path[5:-4] in files:
                body = files[self.path[5:-4]]
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_trickling_server_ends_as_a_timeout(tmp_path, server):
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{server}/trickle.jpg\n{server}/img/good0.jpg\n")
    start = time.monotonic()
    done = run("curate", "--workspace", tmp_path / "ws", "scrape", "Pho", "--engine", "urls", "--urls", urls,
               "--per-class", "2", "--timeout", "1", "--threads", "1", timeout=90)
    took = time.monotonic() - start
    assert took < 45, f"scrape took {took:.0f} s against a 1 s timeout"
    assert_refused(done, "ended short of 2", "Pho", code=1)
    assert "timeout 1" in row(done.stdout, "Pho")
    assert images_in(tmp_path / "ws") == {"Pho": [f"{server}/img/good0.jpg"]}


def test_download_past_the_byte_cap_is_refused(tmp_path, server):
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{server}/endless.jpg\n{server}/img/good4.jpg\n")
    done = run("curate", "--workspace", tmp_path / "ws", "scrape", "Pho", "--engine", "urls", "--urls", urls,
               "--per-class", "2", "--threads", "1", "--timeout", "5")
    assert_refused(done, "ended short of 2", code=1)
    assert "file_too_big 1" in row(done.stdout, "Pho")
    assert images_in(tmp_path / "ws") == {"Pho": [f"{server}/img/good4.jpg"]}
    assert sum(p.stat().st_size for p in (tmp_path / "ws" / "images").rglob("*") if p.is_file()) < 100_000


def test_url_list_with_non_web_lines_downloads_the_good_ones(tmp_path, server):
    urls = tmp_path / "urls.txt"
    lines = ["file:///etc/passwd", "ftp://127.0.0.1/a.jpg", "javascript:alert(1)", "", "   ", "garbage line here",
             "http://[::1/broken.jpg", "Pho\t", "file:///dev/zero", "http://a..b/x.jpg", f"http://{'a' * 300}/x.jpg"]
    lines += [f"{server}/img/good{k}.jpg" for k in (1, 2, 3)]
    urls.write_text("\n".join(lines) + "\n")
    digest = tree_digest(tmp_path)
    done = run("curate", "--workspace", tmp_path / "ws", "scrape", "Pho", "--engine", "urls", "--urls", urls,
               "--per-class", "3", "--threads", "2", "--timeout", "2")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    # the last two fail inside the download (urllib3's LocationParseError): counted, and the thread goes on
    assert "bad_url 7, http_error 2" in row(done.stdout, "Pho")
    assert images_in(tmp_path / "ws") == {"Pho": [f"{server}/img/good{k}.jpg" for k in (1, 2, 3)]}
    assert {k: v for k, v in tree_digest(tmp_path).items() if not k.startswith("ws")} == digest


def test_search_results_with_non_web_urls_do_not_stop_the_downloaders(tmp_path, server):
    """Five file://, ftp:// and javascript: results before three good ones, on two threads: each used to kill a
    downloader thread (KeyError 'file' in icrawler's proxy lookup), so nothing was downloaded."""
    done = run("curate", "--workspace", tmp_path / "ws", "scrape", "Pho", "--engine", "bing", "--search-url",
               f"{server}/search", "--per-class", "3", "--threads", "2", "--timeout", "2")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "bad_url 5" in row(done.stdout, "Pho")
    assert images_in(tmp_path / "ws") == {"Pho": [f"{server}/img/good{k}.jpg" for k in range(3)]}


@pytest.mark.parametrize("command, option, value, wanted", [
    ("scrape", "--threads", "0", "a whole number >= 1 and <= 64"),
    ("scrape", "--threads", "-4", "a whole number >= 1 and <= 64"),
    ("scrape", "--timeout", "0", "a number > 0 and <= 3600"),
    ("scrape", "--timeout", "-1", "a number > 0 and <= 3600"),
    ("scrape", "--timeout", "nan", "a number > 0 and <= 3600"),
    ("scrape", "--timeout", "inf", "a number > 0 and <= 3600"),
    ("scrape", "--per-class", "0", "a whole number >= 1 and <= 100000"),
    ("scrape", "--per-class", "-5", "a whole number >= 1 and <= 100000"),
    ("scrape", "--min-size", "-1", "a whole number >= 1 and <= 10000"),
    ("import", "--min-size", "nan", "a whole number >= 1 and <= 10000"),
    ("import", "--min-size", "0", "a whole number >= 1 and <= 10000"),
])
def test_numeric_options_out_of_range(tmp_path, command, option, value, wanted):
    src = tmp_path / "src" / "ramen"
    photo(src / "0.jpg", seed=60)
    args = ["Pho", "--engine", "urls", "--urls", tmp_path / "none.txt"] if command == "scrape" else [tmp_path / "src"]
    done = run("curate", "--workspace", tmp_path / "ws", command, *args, f"{option}={value}")
    assert_refused(done, option, wanted, repr(value), code=2)
    assert not (tmp_path / "ws").exists()  # refused before any workspace is created


@pytest.mark.parametrize("option", ["--urls", "--categories-file"])
def test_non_utf8_list_files(tmp_path, server, option):
    bad = tmp_path / "list.txt"
    bad.write_bytes(f"{server}/img/good1.jpg\n".encode() + b"Ph\xe9 \xff\n")  # Latin-1, not UTF-8
    args = (["Pho", "--urls", bad] if option == "--urls" else ["--categories-file", bad, "--urls", tmp_path / "u.txt"])
    (tmp_path / "u.txt").write_text(f"Pho\t{server}/img/good1.jpg\n")
    done = run("curate", "--workspace", tmp_path / "ws", "scrape", "--engine", "urls", *args)
    assert_refused(done, option, "is not UTF-8", "save it as UTF-8", code=2)
    assert images_in(tmp_path / "ws") == {}
    assert bad.read_bytes().endswith(b"Ph\xe9 \xff\n")
