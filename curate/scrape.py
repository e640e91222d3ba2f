"""`scrape`: download images per category through icrawler's feeder/parser/downloader, validated into the workspace."""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote_plus, urlencode, urlsplit

import requests
import urllib3
from icrawler import Crawler, Feeder, ImageDownloader, Parser
from icrawler.builtin.bing import BingFeeder, BingParser
from icrawler.builtin.greedy import GreedyFeeder, GreedyParser
from icrawler.builtin.urllist import PseudoParser, UrlListFeeder
from tqdm import tqdm

from curate import CurateError
from classify.options import read_text
from curate.images import MAX_FILE_BYTES, MIN_SIZE_PX, InvalidImage, inspect_bytes
from curate.quality import QualityConfig, flags_for_file
from curate.workspace import Workspace

ENGINES = ("bing", "flickr", "greedy", "urls")
# Engines icrawler has whose parser no longer reads the live site (checked against icrawler's tracker): not offered,
# and refused up front with why, instead of a thread traceback and zero images.
BROKEN_UPSTREAM = {
    "google": "icrawler's Google parser no longer understands Google's result pages and yields nothing "
              "(hellock/icrawler#107, #125, #135, still open in 0.6.10)",
    "baidu": "icrawler's Baidu parser fails on Baidu's current answers with KeyError 'data' "
             "(hellock/icrawler#103, still open in 0.6.10)",
}
# --timeout bounds each read, so a server trickling a byte at a time would hold a download for ever: a whole
# download gets this many timeouts, then counts as a timeout.
DOWNLOAD_DEADLINE_TIMEOUTS = 3
WEB_SCHEMES = ("http", "https")
FLICKR_API = "https://api.flickr.com/services/rest/"
# Flickr's direct photo URLs asked for in the search itself (no getSizes call per photo), largest first: url_l is
# 1024 px on the long side, url_c 800, url_z 640, url_m 500 (https://www.flickr.com/services/api/misc.urls.html).
FLICKR_SIZES = ("url_l", "url_c", "url_z", "url_m")


@dataclass(frozen=True)
class ScrapeConfig:
    """Settings of one scrape run; the CLI takes its defaults from here."""

    engine: str = "bing"
    per_class: int = 100
    query: str = "{category} food"
    min_size_px: int = MIN_SIZE_PX
    threads: int = 4
    urls_file: str | None = None
    timeout_s: float = 10.0
    search_url: str | None = None  # replaces the engine's search endpoint (a mirror, or a local server in tests)
    queue_timeout_s: float = 2.0  # how long icrawler's threads wait on an empty queue before checking for the end


@dataclass
class CategoryResult:
    """Outcome for one category: new images, known ones met again, final usable total, rejections by reason."""

    category: str
    downloaded: int = 0
    already_present: int = 0
    total: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    message: str = ""
    pages: int = 0
    results: int = 0


@dataclass(frozen=True)
class ScrapeReport:
    engine: str
    categories: tuple[CategoryResult, ...]


def read_categories(names: list[str], categories_file: str | None) -> list[str]:
    """Categories from the command line and/or a file (one per line, # comments), de-duplicated, in order."""
    out = list(names)
    if categories_file:
        lines = read_text(categories_file, "--categories-file", CurateError).splitlines()
        out += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    out = list(dict.fromkeys(n.strip() for n in out if n.strip()))
    if not out:
        raise CurateError("no categories given; name some or pass --categories-file")
    return out


def read_url_list(path: str, categories: list[str]) -> dict[str, list[str]]:
    """Lines 'category<TAB>url', or bare URLs when exactly one category is named."""
    lines = read_text(path, "--urls", CurateError).splitlines()
    urls: dict[str, list[str]] = {c: [] for c in categories}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in line:
            category, url = (s.strip() for s in line.split("\t", 1))
        elif len(categories) == 1:
            category, url = categories[0], line
        else:
            raise CurateError(f"{path}:{n}: bare URL but {len(categories)} categories named; use 'category<TAB>url' lines")
        if category in urls:
            urls[category].append(url)
    return urls


def is_web_url(url: str) -> bool:
    """An http(s) URL with a host: the only kind a download is tried for (icrawler's session dies on others)."""
    try:
        parts = urlsplit(url)
        return parts.scheme.lower() in WEB_SCHEMES and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed [ in the host
        return False


class _State:
    """Counters shared by the threads working on one category."""

    def __init__(self, result: CategoryResult, target: int):
        self.result = result
        self.target = target
        self.lock = threading.Lock()
        self.refused: str | None = None  # the search API's own error message, if it answered with one
        self.failed: str | None = None  # why the workspace could not store an image; ends the scrape

    def reject(self, reason: str) -> None:
        with self.lock:
            self.result.rejected[reason] = self.result.rejected.get(reason, 0) + 1


class WorkspaceDownloader(ImageDownloader):
    """icrawler downloader that validates each file and stores it in the workspace, up to the target."""

    ws: Workspace
    state: _State
    category: str
    query: str
    engine: str
    config: ScrapeConfig

    def _fetch(self, url: str, timeout: float) -> bytes | None:
        """The body, or None with the reason counted: an HTTP status, timeout (a read, or the whole download past
        its deadline), file_too_big (read in blocks, stopped past the cap), http_error."""
        deadline = time.monotonic() + DOWNLOAD_DEADLINE_TIMEOUTS * timeout
        try:
            with self.session.get(url, timeout=timeout, stream=True) as response:
                if response.status_code != 200:
                    self.state.reject(f"http_{response.status_code}")
                    return None
                data = bytearray()
                # read1 returns what one socket read brought, so the deadline is checked however slow the server
                while block := response.raw.read1(1 << 16, decode_content=True):
                    data += block
                    if len(data) > MAX_FILE_BYTES:
                        self.state.reject("file_too_big")
                        return None
                    if time.monotonic() > deadline:
                        self.state.reject("timeout")
                        return None
                return bytes(data)
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            self.state.reject("timeout")
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            self.state.reject("http_error")
        return None

    def download(self, task, default_ext, timeout=5, max_retry=3, overwrite=False, **kwargs):
        task["success"] = False
        try:
            return self._store(task["file_url"], task)
        except Exception:  # noqa: BLE001  icrawler's worker thread dies on any exception: one URL must not end it
            logging.getLogger(__name__).debug("download of %r failed", task.get("file_url"), exc_info=True)
            self.state.reject("download_error")
            return False

    def _store(self, url, task) -> bool:
        """Fetch, validate and add one URL; True if it was stored."""
        state = self.state
        if self.signal.get("reach_max_num"):
            return False
        if not isinstance(url, str) or not is_web_url(url):
            state.reject("bad_url")
            return False
        if self.ws.has_url(url):  # never download a known URL again
            with state.lock:
                state.result.already_present += 1
            return False
        data = self._fetch(url, self.config.timeout_s)
        if data is None:
            return False
        try:
            info = inspect_bytes(data, min_size_px=self.config.min_size_px)
        except InvalidImage as err:
            state.reject(err.reason)
            return False
        flags = flags_for_file(data, QualityConfig(min_size_px=self.config.min_size_px))
        with state.lock:  # the check and the add are one step, so no category overshoots its target
            if state.result.total >= state.target:
                self.signal.set(reach_max_num=True)
                return False
            try:
                record = self.ws.add_image(data, self.category, source=self.engine, query=self.query,
                                           source_url=url, info=info, flags=flags)
            except (CurateError, sqlite3.Error) as err:  # the workspace cannot take more (disk full, ...): stop
                state.failed = str(err) if isinstance(err, CurateError) else f"the manifest refused a new image: {err}"
                self.signal.set(reach_max_num=True)
                return False
            if record is None:
                state.result.already_present += 1  # identical bytes under another URL
                return False
            state.result.downloaded += 1
            state.result.total += 1
            self.fetched_num += 1
            if state.result.total >= state.target:
                self.signal.set(reach_max_num=True)
        task["success"] = True
        return True


def _counting(parser_cls):
    """A parser subclass that counts result pages and results, to tell 'unreachable' from 'no results'."""

    class Counting(parser_cls):
        state: _State

        def parse(self, response, **kwargs):
            if response.status_code != 200:
                self.state.reject(f"search_http_{response.status_code}")
                return
            with self.state.lock:
                self.state.result.pages += 1
            for task in parser_cls.parse(self, response, **kwargs) or ():
                with self.state.lock:
                    self.state.result.results += 1
                yield task

    return Counting


def _bing_feeder(search_url: str):
    class Feeder(BingFeeder):
        def feed(self, keyword, offset, max_num, filters=None):
            for i in range(offset, offset + max_num, 20):
                self.out_queue.put(f"{search_url}?q={quote_plus(keyword)}&first={i}")

    return Feeder


def _flickr(api_url: str, apikey: str):
    """Feeder and parser for flickr.photos.search, asking for direct photo URLs in the results (icrawler's own parser
    calls getSizes once per photo and needs a size_preference it is not given through Crawler.crawl)."""

    class FlickrFeeder(Feeder):
        def feed(self, keyword, max_num):
            params = {"method": "flickr.photos.search", "api_key": apikey, "text": keyword, "sort": "relevance",
                      "content_type": 1, "media": "photos", "extras": ",".join(FLICKR_SIZES), "per_page": 100,
                      "format": "json", "nojsoncallback": 1}
            for page in range(1, min(max_num, 4000) // 100 + 2):
                if self.signal.get("reach_max_num"):
                    break
                self.out_queue.put(f"{api_url}?{urlencode({**params, 'page': page})}")

    class FlickrParser(Parser):
        state: _State

        def parse(self, response, **kwargs):
            try:
                content = response.json()
            except ValueError:
                content = {"stat": "fail", "message": "the answer is not JSON"}
            if content.get("stat") != "ok":
                self.state.refused = str(content.get("message") or content.get("stat"))
                self.signal.set(reach_max_num=True)  # a bad key or a closed API: no further page will do better
                return
            for photo in content.get("photos", {}).get("photo", []):
                url = next((photo[size] for size in FLICKR_SIZES if photo.get(size)), None)
                if url:
                    yield dict(file_url=url, meta={"id": photo.get("id"), "title": photo.get("title")})

    return FlickrFeeder, FlickrParser


def _crawler(engine: str, config: ScrapeConfig, category: str, query: str, need: int, known: int, urls: list[str]):
    """(crawler, feeder_kwargs, parser_kwargs) for one category."""
    if engine == "bing":
        feeder = _bing_feeder(config.search_url or "https://www.bing.com/images/async")
        # Known URLs come back on the first pages, so ask for enough pages to get past them.
        feed = dict(keyword=query, offset=0, max_num=min(1000, known + 3 * need + 20))
        parser = _counting(BingParser)
    elif engine == "flickr":
        apikey = os.environ.get("FLICKR_APIKEY")
        if not apikey:
            raise CurateError("--engine flickr needs a Flickr API key in the FLICKR_APIKEY environment variable")
        feeder, parser = _flickr(config.search_url or FLICKR_API, apikey)
        parser = _counting(parser)
        feed = dict(keyword=query, max_num=known + 3 * need)
    elif engine == "greedy":
        if not query.startswith(("http://", "https://")):
            raise CurateError("--engine greedy crawls a site: give --query a URL such as 'https://example.com/{category}'")
        feeder, parser = GreedyFeeder, _counting(GreedyParser)
        feed = dict(domains=[query])
    else:  # urls
        feeder, parser = UrlListFeeder, PseudoParser
        feed = dict(url_list=urls)
    crawler = Crawler(feeder_cls=feeder, parser_cls=parser, downloader_cls=WorkspaceDownloader,
                      downloader_threads=config.threads, log_level=logging.CRITICAL, storage={"root_dir": os.devnull})
    parser_kwargs = dict(queue_timeout=config.queue_timeout_s, req_timeout=config.timeout_s)
    if engine == "greedy":
        parser_kwargs["domains"] = feed["domains"]
    return crawler, feed, parser_kwargs


def check_engine(name: str) -> str:
    """`name` when it is one of ENGINES, else CurateError saying why (for a broken one, its upstream issue)."""
    if name in BROKEN_UPSTREAM:
        raise CurateError(f"engine {name!r} does not work: {BROKEN_UPSTREAM[name]}; use bing")
    if name not in ENGINES:
        raise CurateError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")
    return name


def check_query(query: str) -> str:
    """`query` when `{category}` is its only placeholder (str.format's braces; `{{` and `}}` for literal ones)."""
    try:
        query.format(category="x")
    except (ValueError, KeyError, IndexError, AttributeError) as err:
        raise CurateError(f"--query {query!r} is not a template whose only placeholder is {{category}} "
                          f"({type(err).__name__}: {err}); write a literal brace as {{{{ or }}}}") from None
    return query


def scrape(ws: Workspace, categories: list[str], config: ScrapeConfig = ScrapeConfig(),
           progress: bool = False) -> ScrapeReport:
    """Top each category up to config.per_class usable images (pending or accepted).

    Idempotent and resumable: known URLs are never fetched again, identical bytes are never stored
    twice, and a run stopped at any point leaves a consistent workspace that the next run tops up.
    A category that cannot be filled gets a message and the others go on.
    """
    check_engine(config.engine)
    if config.per_class < 1:
        raise CurateError("--per-class must be at least 1")
    if config.threads < 1 or not config.timeout_s > 0:
        raise CurateError(f"--threads must be at least 1 and --timeout above 0 "
                          f"(got {config.threads} and {config.timeout_s})")
    check_query(config.query)
    url_lists: dict[str, list[str]] = {}
    if config.engine == "urls":
        if not config.urls_file:
            raise CurateError("--engine urls needs --urls FILE")
        url_lists = read_url_list(config.urls_file, categories)
    results = []
    for category in tqdm(categories, desc=f"scrape ({config.engine})", unit="class", disable=not progress):
        have = ws.count(category=category, status=("pending", "accepted"))
        result = CategoryResult(category, total=have)
        results.append(result)
        need = config.per_class - have
        if need <= 0:
            continue
        query = config.query.format(category=category)
        urls = url_lists.get(category, [])
        if config.engine == "urls":
            web = [u for u in urls if is_web_url(u)]
            if len(web) < len(urls):
                result.rejected["bad_url"] = len(urls) - len(web)
            fresh = [u for u in web if not ws.has_url(u)]
            result.already_present += len(web) - len(fresh)
            urls = fresh
            if not urls:
                result.message = "no new URLs in the list" if web else "no http(s) URLs in the list"
                continue
        state = _State(result, config.per_class)
        known = ws.count(category=category)
        crawler, feed, parser_kwargs = _crawler(config.engine, config, category, query, need, known, urls)
        downloader = crawler.downloader
        downloader.ws, downloader.state, downloader.category = ws, state, category
        downloader.query, downloader.engine, downloader.config = query, config.engine, config
        crawler.parser.state = state
        crawler.crawl(feeder_kwargs=feed, parser_kwargs=parser_kwargs,
                      downloader_kwargs=dict(max_num=0, queue_timeout=config.queue_timeout_s, req_timeout=config.timeout_s))
        if state.failed:
            kept = sum(x.downloaded for x in results)
            raise CurateError(f"{state.failed}; kept the {kept} image{'' if kept == 1 else 's'} downloaded before, "
                              "re-run to carry on")
        if result.total < config.per_class:
            if state.refused:
                result.message = f"{config.engine} refused the search: {state.refused}"
            elif config.engine != "urls" and result.pages == 0:
                result.message = "search engine unreachable or refused every result page"
            elif config.engine != "urls" and result.results == 0:
                result.message = "the search returned no results"
            else:
                result.message = f"only {result.total} of {config.per_class} usable images found"
    return ScrapeReport(config.engine, tuple(results))
