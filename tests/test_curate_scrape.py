"""End-to-end scrape tests: real icrawler threads against a real HTTP server on 127.0.0.1 (no network)."""
import html
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from PIL import Image

from curate import CurateError
from curate.scrape import ScrapeConfig, scrape
from curate.workspace import Workspace
from test_curate_importer import photo, run_cli


def encoded(seed, fmt, size=(200, 160)):
    buf = io.BytesIO()
    Image.open(photo_path_cache(seed, size)).convert("RGB").save(buf, fmt)
    return buf.getvalue()


_CACHE = {}


def photo_path_cache(seed, size):
    import tempfile
    from pathlib import Path

    key = (seed, size)
    if key not in _CACHE:
        _CACHE[key] = photo(Path(tempfile.mkdtemp()) / f"{seed}.png", seed, size)
    return _CACHE[key]


def huge_png():
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    """Serves /images/async (a Bing-style results page) and /img/<name>.jpg with every kind of file."""
    files = {
        "good1": encoded(1, "JPEG"), "good2": encoded(2, "PNG"), "good3": encoded(3, "WEBP"),
        "good4": encoded(4, "JPEG"), "good5": encoded(5, "JPEG"), "good6": encoded(6, "JPEG"),
        "copy1": None,  # same bytes as good1 under another URL
        "truncated": encoded(7, "JPEG", (400, 400))[:1500], "html": b"<html><body>403</body></html>",
        "empty": b"", "huge": huge_png(), "tiny": encoded(8, "JPEG", (50, 50)), "slow": encoded(9, "JPEG"),
    }
    files["copy1"] = files["good1"]
    bing_order = ["good1", "html", "good2", "truncated", "copy1", "empty", "good3", "huge", "tiny", "slow", "missing",
                  "good4", "good5", "good6"]
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            if self.path.startswith("/images/async"):
                port = self.server.server_address[1]
                divs = "".join(
                    f'<div class="imgpt"><a class="iusc" m="{html.escape(json.dumps({"murl": f"http://127.0.0.1:{port}/img/{name}.jpg"}, separators=(",", ":")))}">x</a></div>'
                    for name in (bing_order if "first=0" in self.path else []))
                body = f"<html><body>{divs}</body></html>".encode()
                ctype = "text/html"
            elif self.path.startswith("/site/ramen"):  # a small site for the greedy crawler: 3 images over 2 pages
                port = self.server.server_address[1]
                if self.path.endswith("/more.html"):
                    body = f'<html><img src="http://127.0.0.1:{port}/img/good6.jpg"></html>'.encode()
                else:
                    body = (f'<html><img src="http://127.0.0.1:{port}/img/good4.jpg"><a href="/img/good5.jpg">x</a>'
                            f'<a href="/site/ramen/more.html">more</a><a href="javascript:void(0)">js</a></html>').encode()
                ctype = "text/html"
            elif self.path.startswith("/services/rest/"):  # Flickr's REST API: flickr.photos.search
                port = self.server.server_address[1]
                query = parse_qs(urlparse(self.path).query)
                if query.get("api_key") != ["good-key"]:
                    answer = {"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"}
                else:
                    page = int(query["page"][0])
                    names = ["good4", "good5", "truncated", "good6"] if page == 1 else []
                    photos = [{"id": str(k), "title": name, "url_z": f"http://127.0.0.1:{port}/img/{name}.jpg"}
                              for k, name in enumerate(names)]
                    photos.append({"id": "99", "title": "no size offered"})  # skipped, not an error
                    answer = {"stat": "ok", "photos": {"page": page, "pages": 1, "photo": photos}}
                body, ctype = json.dumps(answer).encode(), "application/json"
            elif self.path.startswith("/empty-search"):
                body, ctype = b"<html><body>no results</body></html>", "text/html"
            elif self.path.startswith("/img/"):
                name = self.path[5:].rsplit(".", 1)[0]
                if name not in files:
                    self.send_response(404)
                    self.end_headers()
                    return
                if name == "slow":
                    time.sleep(3)
                body, ctype = files[name], "image/jpeg"
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()


def _settled_count(hits, prefix):
    """Requests so far whose path starts with prefix, once the server has been quiet for a second: on a loaded
    machine the server may log a request that the client had already abandoned (timeout) after the run returned."""
    last, quiet_since = len(hits), time.monotonic()
    while time.monotonic() - quiet_since < 1.0:
        time.sleep(0.1)
        if len(hits) != last:
            last, quiet_since = len(hits), time.monotonic()
    return sum(1 for h in hits if h.startswith(prefix))


def config(base, **kw):
    return ScrapeConfig(**{"engine": "bing", "search_url": f"{base}/images/async", "timeout_s": 1.0, "threads": 4,
                           "queue_timeout_s": 0.5, **kw})


@pytest.mark.slow
def test_bing_engine_end_to_end_validates_and_tops_up(tmp_path, server):
    base, hits = server
    with Workspace(tmp_path / "ws") as ws:
        report = scrape(ws, ["Pad Thai"], config(base, per_class=20))
        result = report.categories[0]
        assert result.downloaded == 6 and result.total == 6 and result.already_present == 1  # copy1 = good1
        assert result.rejected == {"not_an_image": 1, "truncated": 1, "empty": 1, "too_large": 1, "too_small": 1,
                                   "timeout": 1, "http_404": 1}
        assert "only 6 of 20" in result.message
        records = ws.list_images(category="Pad Thai")
        assert sorted(r.format for r in records) == ["JPEG", "JPEG", "JPEG", "JPEG", "PNG", "WEBP"]
        assert all(r.source == "bing" and r.query == "Pad Thai food" and r.source_url.startswith(base) for r in records)
        assert all(ws.abspath(r).suffix == {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[r.format] for r in records)
        files_before = {p: p.read_bytes() for p in (tmp_path / "ws" / "images").rglob("*") if p.is_file()}
        assert len(files_before) == 6  # rejected downloads are not kept
        # re-run: no known URL is fetched again, nothing new stored, nothing overwritten
        n_img_hits = _settled_count(hits, "/img/good")
        again = scrape(ws, ["Pad Thai"], config(base, per_class=20)).categories[0]
        assert again.downloaded == 0 and again.already_present == 7
        assert _settled_count(hits, "/img/good") == n_img_hits, " ".join(hits)
        assert {p: p.read_bytes() for p in (tmp_path / "ws" / "images").rglob("*") if p.is_file()} == files_before


def test_per_class_cap_and_topping_up(tmp_path, server):
    base, _ = server
    with Workspace(tmp_path / "ws") as ws:
        first = scrape(ws, ["Ramen"], config(base, per_class=2, threads=1)).categories[0]
        assert first.total == 2 and first.downloaded == 2 and first.message == ""
        assert ws.count(category="Ramen") == 2
        second = scrape(ws, ["Ramen"], config(base, per_class=3, threads=1)).categories[0]
        assert second.downloaded == 1 and second.total == 3 and ws.count(category="Ramen") == 3


def test_unreachable_and_empty_engine_messages(tmp_path, server):
    base, _ = server
    with Workspace(tmp_path / "ws") as ws:
        dead = scrape(ws, ["Pho"], config("http://127.0.0.1:9", per_class=1)).categories[0]
        assert dead.total == 0 and "unreachable" in dead.message
        empty = scrape(ws, ["Pho"], config(base, per_class=1, search_url=f"{base}/empty-search")).categories[0]
        assert empty.total == 0 and "no results" in empty.message


def test_broken_engines_reported(tmp_path):
    with Workspace(tmp_path / "ws") as ws:
        for engine, issue in (("google", "#107"), ("baidu", "#103")):
            with pytest.raises(CurateError, match=issue):
                scrape(ws, ["Pho"], ScrapeConfig(engine=engine))


def test_cli_urls_engine_with_categories(tmp_path, server):
    base, _ = server
    urls = tmp_path / "urls.tsv"
    urls.write_text(f"Pad Thai\t{base}/img/good1.jpg\nPad Thai\t{base}/img/html.jpg\nRamen\t{base}/img/good2.jpg\n"
                    f"Ramen\t{base}/img/good3.jpg\nOther\t{base}/img/good4.jpg\n")
    ws = tmp_path / "ws"
    out = run_cli("--workspace", str(ws), "scrape", "Pad Thai", "Ramen", "--engine", "urls", "--urls", str(urls),
                  "--per-class", "2", "--timeout", "2")
    assert out.returncode == 1, out.stderr  # Pad Thai ended short
    assert "Pad Thai" in out.stderr and "Ramen" not in out.stderr
    assert "not_an_image 1" in out.stdout
    with Workspace(ws) as w:
        assert w.count(category="Pad Thai") == 1 and w.count(category="Ramen") == 2 and w.count() == 3
    bare = tmp_path / "bare.txt"
    bare.write_text(f"{base}/img/good5.jpg\n")
    out = run_cli("--workspace", str(ws), "scrape", "Pad Thai", "--engine", "urls", "--urls", str(bare), "--per-class", "2")
    assert out.returncode == 0, out.stderr
    bad = run_cli("--workspace", str(ws), "scrape", "A", "B", "--engine", "urls", "--urls", str(bare))
    assert bad.returncode == 2 and "bare URL" in bad.stderr and "Traceback" not in bad.stderr


def test_greedy_engine_crawls_a_site(tmp_path, server):
    base, _ = server
    with Workspace(tmp_path / "ws") as ws:
        result = scrape(ws, ["ramen"], config(base, engine="greedy", query=f"{base}/site/{{category}}",
                                               per_class=10)).categories[0]
        assert result.downloaded == 3 and "only 3 of 10" in result.message
        assert sorted(r.source_url.rsplit("/", 1)[1] for r in ws.list_images()) == ["good4.jpg", "good5.jpg", "good6.jpg"]
        assert {r.source for r in ws.list_images()} == {"greedy"}
        with pytest.raises(CurateError, match="give --query a URL"):
            scrape(ws, ["ramen"], config(base, engine="greedy"))


def test_flickr_needs_an_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("FLICKR_APIKEY", raising=False)
    with Workspace(tmp_path / "ws") as ws, pytest.raises(CurateError, match="FLICKR_APIKEY"):
        scrape(ws, ["Pho"], ScrapeConfig(engine="flickr"))


def test_flickr_engine_end_to_end(tmp_path, server, monkeypatch):
    """flickr.photos.search on a local REST endpoint: direct URLs from the search's extras, validated like any
    download; a refused key is reported in the API's own words."""
    base, hits = server
    with Workspace(tmp_path / "ws") as ws:
        monkeypatch.setenv("FLICKR_APIKEY", "good-key")
        result = scrape(ws, ["Pho"], config(base, engine="flickr", search_url=f"{base}/services/rest/",
                                            per_class=5)).categories[0]
        assert result.downloaded == 3 and result.rejected == {"truncated": 1} and result.results == 4
        assert result.message == "only 3 of 5 usable images found"
        search = next(h for h in hits if h.startswith("/services/rest/"))
        assert {"method": ["flickr.photos.search"], "text": ["Pho food"]}.items() <= parse_qs(urlparse(search).query).items()
        assert sorted(r.source_url.rsplit("/", 1)[1] for r in ws.list_images()) == ["good4.jpg", "good5.jpg", "good6.jpg"]
        assert {r.source for r in ws.list_images()} == {"flickr"}
        monkeypatch.setenv("FLICKR_APIKEY", "bad-key")
        refused = scrape(ws, ["Ramen"], config(base, engine="flickr", search_url=f"{base}/services/rest/")).categories[0]
        assert refused.downloaded == 0
        assert refused.message == "flickr refused the search: Invalid API Key (Key has invalid format)"
