"""classify export --format space|web: a Gradio Space served by its own app.py, and a static web app checked against
classify predict in headless Chromium (served by a plain http.server on 127.0.0.1)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import pytest

from badinput import run, tree_digest
from classify import share
from conftest import FAST, ROOT, make_nonfood
from test_demo import CHROMIUM, CHROMIUM_ARGS, free_port, wait_for_server

PHOTOS = 20  # food-dev valid photos the browser must agree with classify predict on
PROBABILITY_TOLERANCE = 0.01
# A JPEG at least twice the bundle's resize_to on its short side is decoded by Pillow at 1/2, 1/4 or 1/8 scale
# (draft); the page rebuilds that scaled decode from the browser's full-size pixels, within about 0.3 levels on
# average but not exactly: measured on food-dev with the 64 px FAST bundle, top-1 probabilities differ by up to
# 0.044 (top-1 the same on all 20), on the tiny bundle's examples by up to 0.036.
DRAFT_TOLERANCE = 0.06


# -- onnxruntime-web from the npm cache scripts/setup.sh fills -----------------------------------------------------

def npm_caches() -> list[Path]:
    return [Path(os.environ["PLATEKIT_NPM_CACHE"])] if os.environ.get("PLATEKIT_NPM_CACHE") else \
        [ROOT / ".venv" / "npm-cache", Path.home() / ".cache" / "platekit" / "npm"]


@pytest.fixture(scope="session")
def ort_dist(tmp_path_factory) -> Path:
    """onnxruntime-web@ORT_VERSION's dist/ folder, unpacked from `npm pack`'s tarball (packed here when npm is
    installed and setup.sh has not done it yet)."""
    name = f"onnxruntime-web-{share.ORT_VERSION}.tgz"
    found = [cache / name for cache in npm_caches() if (cache / name).is_file()]
    if not found:
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed, so there is no onnxruntime-web to test the web export with")
        cache = npm_caches()[-1]
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["npm", "pack", f"onnxruntime-web@{share.ORT_VERSION}"], cwd=cache,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.skip(f"npm pack onnxruntime-web failed: {done.stderr.strip()[-300:]}")
        found = [cache / name]
    unpacked = tmp_path_factory.mktemp("ort")
    with tarfile.open(found[0]) as tar:
        members = [m for m in tar.getmembers() if m.name in {f"package/dist/{f}" for f in share.ORT_FILES}]
        tar.extractall(unpacked, members=members, filter="data")
    return unpacked / "package" / "dist"


def test_pinned_integrity_is_the_npm_files_sha384(ort_dist):
    digest = base64.b64encode(hashlib.sha384((ort_dist / share.ORT_SCRIPT).read_bytes()).digest()).decode()
    assert share.ORT_INTEGRITY == f"sha384-{digest}"


# -- serving a folder and driving Chromium ---------------------------------------------------------------------------

class Handler(SimpleHTTPRequestHandler):
    # What any static host does: onnxruntime-web imports its .mjs loader, which must come as JavaScript.
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm"}

    def log_message(self, *args):
        pass


class HeadersFileHandler(Handler):
    """A host that applies the folder's `_headers` file to every response, as Netlify and Cloudflare Pages do."""

    def end_headers(self):
        rules = (Path(self.directory) / "_headers").read_text(encoding="utf-8").splitlines()
        assert rules[0] == "/*"
        for line in rules[1:]:
            self.send_header(*(part.strip() for part in line.split(":", 1)))
        super().end_headers()


@pytest.fixture
def serve():
    servers = []

    def start(folder: Path, isolated: bool = False) -> str:
        handler = HeadersFileHandler if isolated else Handler
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def browser_predictions(browser, url: str, photos: list[Path]) -> list[dict]:
    """Each photo picked in the page's file input, as a user would: {"predictions": the top 5 the page shows,
    "on_menu", "menu_score", "verdict": the line above the top 5}, as `classify predict --json` (plus the verdict);
    #top1's text is checked against the top class (its name with spaces for underscores, as the demo shows it)."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_function("document.body.dataset.state === 'ready' || document.body.dataset.state === 'error'",
                           timeout=60_000)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#status")
    results = []
    for count, photo in enumerate(photos, start=1):
        page.locator("#file").set_input_files(str(photo))
        page.wait_for_function(f"document.body.dataset.count === '{count}'", timeout=60_000)
        assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#status")
        top = json.loads(page.evaluate("document.body.dataset.result"))
        assert page.inner_text("#top1") == top[0]["label"].replace("_", " ")
        score = page.evaluate("document.body.dataset.menuScore")
        results.append({"predictions": top, "on_menu": page.evaluate("document.body.dataset.onMenu") == "true",
                        "menu_score": float(score) if score else None, "verdict": page.inner_text("#verdict")})
    assert not errors, errors
    page.close()
    return results


def predict_cli(bundle: Path, photos: list[Path], *options) -> list[dict]:
    done = run("classify", "predict", "--model", bundle, "--json", *options, *photos)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


MENU_TOLERANCE = 1e-3  # on-menu scores, page vs Python: the same float16 bank, sums in another order


def agreement(browser, python, tolerance: float | None = MENU_TOLERANCE) -> float:
    """Same top-1 and on-menu verdict on every photo, on-menu scores within `tolerance` (None: not compared, where the
    scaled JPEG decode differs: the score is standardized by valid's spread, which a tiny set makes narrow); returns
    the largest top-1 probability difference."""
    assert [b["predictions"][0]["label"] for b in browser] == [p["predictions"][0]["label"] for p in python]
    for b, p in zip(browser, python):
        assert (b["menu_score"] is None) == (p["menu_score"] is None)
        if p["menu_score"] is not None and tolerance is not None:
            assert abs(b["menu_score"] - p["menu_score"]) <= tolerance, (b, p)
        assert b["on_menu"] == p["on_menu"], (b, p)
        if not b["on_menu"]:
            assert b["verdict"].startswith("This doesn't look like any of my")
    return max(abs(b["predictions"][0]["probability"] - p["predictions"][0]["probability"])
               for b, p in zip(browser, python))


def export_web(bundle, out, *options):
    done = run("classify", "export", "--model", bundle, "--format", "web", "--out", out, *options)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


# -- the web app ---------------------------------------------------------------------------------------------------

def test_web_export_default_loads_pinned_cdn_with_integrity(trained_bundle, tmp_path):
    export_web(trained_bundle, tmp_path / "web")
    html = (tmp_path / "web" / "index.html").read_text()
    assert f'src="{share.ORT_CDN}{share.ORT_SCRIPT}" integrity="{share.ORT_INTEGRITY}" crossorigin="anonymous"' in html
    assert 'accept="image/*" capture="environment"' in html and 'id="top1"' in html
    settings = json.loads((tmp_path / "web" / "model.json").read_text())
    config = json.loads((trained_bundle / "config.json").read_text())
    assert settings["classes"] == config["classes"] and settings["resize_to"] == config["cache_size"]
    assert settings["temperature"] == config.get("temperature", 1.0) and settings["ort"]["wasm"] == share.ORT_CDN
    assert not (tmp_path / "web" / "ort").exists()
    assert sorted(p.name for p in (tmp_path / "web").iterdir()) == sorted(
        [share.MARKER, "model.onnx", "model.json", "menu.safetensors", "_headers", "README.md", *share.WEB_ASSETS])
    # the on-menu rule travels: the bundle's statistics as they are, its threshold, and the features to score
    assert (tmp_path / "web" / "menu.safetensors").read_bytes() == (trained_bundle / "menu.safetensors").read_bytes()
    assert settings["menu"] == {"method": config["menu_method"], "threshold": config["menu_threshold"],
                                "k": config.get("menu_k", 1), "mix": config["menu_mix"], "file": "menu.safetensors"}
    assert settings["menu"]["method"] == "knn+max-logit"
    import onnx
    outputs = [o.name for o in onnx.load(str(tmp_path / "web" / "model.onnx"), load_external_data=False).graph.output]
    assert outputs == ["features", "logits"]


def test_web_export_of_a_bundle_without_on_menu_statistics(trained_bundle, tmp_path):
    """A bundle made before the on-menu rule: the page counts every photo as on the menu, as Predictor does."""
    old = tmp_path / "old"
    shutil.copytree(trained_bundle, old)
    (old / "menu.safetensors").unlink()
    export_web(old, tmp_path / "web")
    assert json.loads((tmp_path / "web" / "model.json").read_text())["menu"] is None
    assert not (tmp_path / "web" / "menu.safetensors").exists()
    import onnx
    graph = onnx.load(str(tmp_path / "web" / "model.onnx"), load_external_data=False).graph
    assert [o.name for o in graph.output] == ["logits"]


@pytest.mark.slow
def test_web_app_in_chromium_agrees_with_predict_on_tiny_bundle(trained_bundle, tiny_data_session, tmp_path,
                                                               ort_dist, serve, browser):
    """Photos under twice resize_to (96 x 80 here: no scaled JPEG decode) give the same input to the model in the
    browser as in Python, pixel for pixel; the bundle's own examples (256 px: decoded at 1/2) nearly so."""
    export_web(trained_bundle, tmp_path / "web", "--ort-dir", ort_dist)
    assert sorted(p.name for p in (tmp_path / "web" / "ort").iterdir()) == sorted(share.ORT_FILES)
    url = serve(tmp_path / "web")
    photos = sorted((tiny_data_session / "valid").rglob("*.jpg"))
    assert agreement(browser_predictions(browser, url, photos), predict_cli(trained_bundle, photos)) <= 1e-4
    examples = sorted((trained_bundle / "examples").rglob("*.jpg"))
    assert agreement(browser_predictions(browser, url, examples), predict_cli(trained_bundle, examples),
                     tolerance=None) <= DRAFT_TOLERANCE


@pytest.mark.slow
def test_web_app_uses_threads_when_cross_origin_isolated(trained_bundle, tiny_data_session, tmp_path, ort_dist,
                                                          serve, browser):
    """Served by a host that sends the headers in the export's `_headers` (COOP/COEP) the page is cross-origin
    isolated and runs onnxruntime-web on more than one thread (where the browser has 2+ cores), with the same results
    as predict; served plainly, one thread. README.md asks a static Hugging Face Space for the same headers."""
    from huggingface_hub.repocard import metadata_load

    export_web(trained_bundle, tmp_path / "web", "--ort-dir", ort_dist)
    card = metadata_load(tmp_path / "web" / "README.md")
    assert card["sdk"] == "static" and card["app_file"] == "index.html"
    assert card["custom_headers"] == {k.lower(): v for k, v in share.ISOLATION_HEADERS.items()}
    photos = sorted((tiny_data_session / "valid").rglob("*.jpg"))[:4]
    for isolated in (True, False):
        url = serve(tmp_path / "web", isolated=isolated)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
        cores = page.evaluate("navigator.hardwareConcurrency")
        assert page.evaluate("self.crossOriginIsolated") is isolated
        assert page.evaluate("ort.env.wasm.numThreads") == (min(4, cores) if isolated else 1)
        page.close()
        assert agreement(browser_predictions(browser, url, photos), predict_cli(trained_bundle, photos)) <= 1e-4


def test_web_app_int8_in_chromium_agrees_with_predict_int8(trained_bundle, tiny_data_session, tmp_path, ort_dist,
                                                            serve, browser):
    """--int8: the page runs the model's 8-bit copy in onnxruntime-web (QDQ in WebAssembly) and gives the top class,
    the on-menu verdict and score of `predict --runtime onnx-int8`, on photos the two decode pixel for pixel alike."""
    export_web(trained_bundle, tmp_path / "float", "--ort-dir", ort_dist)
    # The tiny bundle's 8-bit copy names float's top class on as few as 6 of its 9 examples on some CPUs (signed
    # weights on one without VNNI, classify/runtime.py): what the page must match is predict's int8 copy, so the
    # share is accepted whatever it is.
    export_web(trained_bundle, tmp_path / "web", "--ort-dir", ort_dist, "--int8", "--min-agreement", "0")
    assert (tmp_path / "web" / "model.onnx").stat().st_size < 0.5 * (tmp_path / "float" / "model.onnx").stat().st_size
    photos = sorted((tiny_data_session / "valid").rglob("*.jpg"))
    got = browser_predictions(browser, serve(tmp_path / "web"), photos)
    assert agreement(got, predict_cli(trained_bundle, photos, "--runtime", "onnx-int8")) <= 1e-3


def test_web_app_applies_the_not_on_menu_rule_as_predict_does(exposed_bundle, trained_bundle, tiny_data_session,
                                                             tmp_path, ort_dist, serve, browser):
    """A bundle trained with --not-on-menu: the page reads the classifier's map from menu.safetensors and gives the
    on-menu score and verdict of `predict`, which differ from the plain rule's; and so for a bundle made with the
    rule's earlier score (-log p(not on the menu), before 2026-12-06)."""
    export_web(exposed_bundle, tmp_path / "web", "--ort-dir", ort_dist)
    settings = json.loads((tmp_path / "web" / "model.json").read_text())
    assert settings["menu"]["method"] == "knn+max-logit+exposed-odds" and "exposure_std" in settings["menu"]["mix"]
    photos = sorted((tiny_data_session / "valid").rglob("*.jpg"))
    photos.append(make_nonfood(tmp_path / "paper.png", seed=3))
    got, python = browser_predictions(browser, serve(tmp_path / "web"), photos), predict_cli(exposed_bundle, photos)
    assert agreement(got, python) <= 1e-4 and got[-1]["on_menu"] is False
    plain = predict_cli(trained_bundle, photos)
    assert max(abs(p["menu_score"] - e["menu_score"]) for p, e in zip(plain, python)) > 0.1
    older = tmp_path / "older"
    shutil.copytree(exposed_bundle, older)
    config = json.loads((older / "config.json").read_text())
    (older / "config.json").write_text(json.dumps(config | {"menu_method": "knn+max-logit+exposed"}))
    export_web(older, tmp_path / "web-older", "--ort-dir", ort_dist)
    got, python_older = browser_predictions(browser, serve(tmp_path / "web-older"), photos), predict_cli(older, photos)
    assert agreement(got, python_older) <= 1e-4
    assert max(abs(o["menu_score"] - e["menu_score"]) for o, e in zip(python_older, python)) > 0.1


@pytest.fixture(scope="module")
def food_bundle(tmp_path_factory):
    from conftest import FOOD_DEV
    if not (FOOD_DEV / "valid").is_dir():
        pytest.skip(f"real food photos not found at {FOOD_DEV} (set PLATEKIT_FOOD_DEV)")
    from classify.train import RunConfig, train

    # lite0's own 224 px (resize_to 256): food-dev's photos (at most 384 px) are decoded at full size, as the
    # browser does; FAST's 64 px would put them in the scaled-decode case (DRAFT_TOLERANCE).
    out = tmp_path_factory.mktemp("runs") / "food"
    train(RunConfig(data=str(FOOD_DEV), out=str(out), **{**FAST, "image_size": 224}))
    return out


@pytest.mark.slow
def test_web_app_in_chromium_agrees_with_predict_on_food_dev(food_bundle, tmp_path, ort_dist, serve, browser):
    """20 real photos (two per class, of every shape food-dev has): the page's top-1 is classify predict's, its
    probability within 0.01."""
    from conftest import FOOD_DEV

    valid = sorted((FOOD_DEV / "valid").rglob("*.jpg"))
    photos = valid[:: max(1, len(valid) // PHOTOS)][:PHOTOS]
    # and photos of other things, where the on-menu rule speaks (real ones where the shared data has them)
    nonfood = sorted((FOOD_DEV.parent / "nonfood-dev").rglob("*.jpg"))[::97][:5] or \
        [make_nonfood(tmp_path / f"paper{i}.png", seed=i) for i in range(3)]
    export_web(food_bundle, tmp_path / "web", "--ort-dir", ort_dist)
    got = browser_predictions(browser, serve(tmp_path / "web"), photos + nonfood)
    expected = predict_cli(food_bundle, photos + nonfood)
    difference = agreement(got, expected)
    menu_difference = max(abs(b["menu_score"] - p["menu_score"]) for b, p in zip(got, expected))
    print(f"max top-1 probability difference browser vs predict over {len(photos)} food-dev photos: {difference:.5f}; "
          f"on-menu scores over those and {len(nonfood)} others: {menu_difference:.6f}, "
          f"{sum(not p['on_menu'] for p in expected[PHOTOS:])} of the others off the menu")
    assert difference <= PROBABILITY_TOLERANCE
    assert not all(p["on_menu"] for p in expected[PHOTOS:]) and not all(b["on_menu"] for b in got[PHOTOS:])


def test_web_export_replaces_its_own_earlier_export(trained_bundle, tmp_path, ort_dist):
    out = tmp_path / "web"
    export_web(trained_bundle, out, "--ort-dir", ort_dist)
    export_web(trained_bundle, out)  # the CDN version over the local one: ort/ goes, nothing else stays behind
    assert not (out / "ort").exists() and (out / "model.onnx").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["web"]  # no staging or old folder left


# -- the Space -------------------------------------------------------------------------------------------------------

def start_space(folder: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`python app.py` in the Space folder with only its own code (no PYTHONPATH), port from GRADIO_SERVER_PORT."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"GRADIO_SERVER_PORT": str(port)}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait_for_server(process, url, log, "app.py")
    return process, url


def test_space_folder_is_complete(trained_bundle, tmp_path):
    out = tmp_path / "space"
    done = run("classify", "export", "--model", trained_bundle, "--format", "space", "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    readme = (out / "README.md").read_text(encoding="utf-8")
    header = readme.split("---")[1]
    assert "\nsdk: gradio\n" in header and "\napp_file: app.py\n" in header
    assert f'\ntitle: "{trained_bundle.name}: 3 dishes"\n' in header
    assert f"\nsdk_version: {metadata.version('gradio')}\n" in header
    pins = dict(line.split("==") for line in (out / "requirements.txt").read_text().split())
    assert pins["gradio"] == metadata.version("gradio") and pins["torch"] == metadata.version("torch").split("+")[0]
    assert set(pins) == set(share.SPACE_REQUIREMENTS)
    assert tree_digest(out / "model") == {k: v for k, v in tree_digest(trained_bundle).items()
                                          if k.split("/")[0] in (*share.BUNDLE_FILES, "examples")}
    where = subprocess.run([sys.executable, "-c", "import classify, demo; print(classify.__file__, demo.__file__)"],
                           cwd=out, capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert all(Path(p).resolve().is_relative_to(out.resolve()) for p in where.stdout.split()), where


@pytest.mark.slow
def test_space_app_serves_predict(trained_bundle, tmp_path):
    from gradio_client import Client, handle_file

    import classify

    out = tmp_path / "space"
    assert run("classify", "export", "--model", trained_bundle, "--format", "space", "--out", out).returncode == 0
    process, url = start_space(out, tmp_path / "space.log")
    try:
        photo = sorted((trained_bundle / "examples" / "green_salad").glob("*.jpg"))[0]
        got = Client(url, verbose=False).predict(handle_file(str(photo)), api_name="/predict")
    finally:
        process.terminate()
        process.wait(timeout=20)
    expected = classify.load(trained_bundle).predict(photo, k=5)
    assert [row["label"] for row in got] == [name for name, _ in expected]
    assert got[0]["probability"] == pytest.approx(expected[0][1], abs=1e-5)
    assert "Traceback" not in (tmp_path / "space.log").read_text()
