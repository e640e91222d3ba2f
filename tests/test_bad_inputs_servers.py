"""Bad input to the two Gradio servers (`curate review`, demo.py): what an unauthenticated client can read, uploads,
file serving, and bad command lines. Real servers on 127.0.0.1, plain HTTP (urllib) and gradio_client."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from badinput import ROOT, assert_refused, run, tree_digest
from test_curate_review import CATEGORIES, make_workspace

from curate.review import launch
from curate.thumbnails import GRID_PX, cached_copy
from curate.workspace import Workspace, select_images

USER, PASSWORD = "cook", "s3cret-pass"


def get(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    """(status, body) of one plain HTTP request, without following the browser's cookies or redirects."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def multipart(name: str, payload: bytes, copies: int = 1) -> tuple[bytes, dict]:
    """A real multipart/form-data body with `copies` files under the field Gradio's /upload reads."""
    boundary = uuid.uuid4().hex
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + payload + b"\r\n"
    body = part * copies + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload_folder() -> Path:
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def files_holding(folder: Path, payload: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size == len(payload)
            and p.read_bytes() == payload] if folder.is_dir() else []


def login_cookie(url: str) -> str:
    """The Cookie header of a session logged in through Gradio's own /login form, sent as the login page sends it
    (multipart/form-data, which the review's no-uploads rule must let through)."""
    boundary = uuid.uuid4().hex
    form = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                   for name, value in (("username", USER), ("password", PASSWORD))) + f"--{boundary}--\r\n"
    request = urllib.request.Request(url + "login", data=form.encode(),
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return "; ".join(h.split(";")[0] for h in response.headers.get_all("set-cookie"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- curate review, launched as `curate review` does -----------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("servers") / "ws")


@pytest.fixture(scope="module")
def review_with_auth(workspace):
    app = launch(workspace, port=None, auth=(USER, PASSWORD), open_browser=False, block=False, quiet=True)
    yield app.local_url
    app.close()
    app.curate_workspace.close()


@pytest.fixture(scope="module")
def review_open(workspace):
    app = launch(workspace, port=None, open_browser=False, block=False, quiet=True)
    yield app.local_url
    app.close()
    app.curate_workspace.close()


def test_review_login_page_embeds_no_endpoint_schema_or_category(review_with_auth):
    status, page = get(review_with_auth)
    assert status == 200 and '"auth_required":true' in page  # the login page
    assert "window.gradio_api_info = null;" in page
    for secret in [*CATEGORIES, "show_first", "named_endpoints", "rv-category"]:
        assert secret not in page, secret
    for route in ("config", "gradio_api/info", "gradio_api/info?all_endpoints=true", "gradio_api/openapi.json",
                  "info", "gradio_api/config", "gradio_api/queue/status"):
        status, body = get(review_with_auth + route)
        assert status in (401, 403, 404), (route, status)
        assert not any(name in body for name in CATEGORIES), route


def test_review_gradio_client_needs_the_credentials(review_with_auth):
    from gradio_client import Client

    with pytest.raises(Exception) as refused:
        Client(review_with_auth, verbose=False)
    assert not any(name in str(refused.value) for name in CATEGORIES)
    client = Client(review_with_auth, auth=(USER, PASSWORD), verbose=False)
    info = client.view_api(print_info=False, return_format="dict")
    assert info["named_endpoints"] or info["unnamed_endpoints"]


def test_review_after_login_the_page_has_its_config(review_with_auth):
    cookie = login_cookie(review_with_auth)
    status, page = get(review_with_auth, headers={"Cookie": cookie})
    assert status == 200 and '"auth_required":true' not in page
    assert "Pad Thai" in page and "window.gradio_api_info = null;" not in page


def test_review_refuses_uploads_and_oversized_requests(review_open):
    payload = b"upload probe " + uuid.uuid4().bytes * 1000
    for route in ("gradio_api/upload", "gradio_api/process_recording", "gradio_api/component_server"):
        body, headers = multipart("probe.bin", payload)
        status, text = get(review_open + route, data=body, headers=headers)
        assert status == 403 and "no uploads" in text, (route, status, text)
    assert files_holding(upload_folder(), payload) == []
    big = json.dumps({"data": ["x" * (2 * 1024 * 1024)], "fn_index": 0, "session_hash": "abc"}).encode()
    status, text = get(review_open + "gradio_api/queue/join", data=big, headers={"Content-Type": "application/json"})
    assert status == 413 and "bytes" in text


def test_review_serves_only_images_and_thumbnails(review_open, workspace):
    (workspace / "notes.txt").write_text("private notes")
    (workspace / "script.py").write_text("print('hi')")
    planted = workspace / "images" / "notes.txt"
    planted.write_text("planted beside the originals")
    with Workspace(workspace, create=False) as ws:
        ws.set_status(select_images(ws, limit=1)[0].id, "pending")  # a write: the WAL file exists now
        image = select_images(ws, limit=1)[0]
        thumbnail = cached_copy(ws, image, GRID_PX)  # as the grid makes it
    assert (workspace / "manifest.sqlite-wal").exists() and thumbnail.is_file()

    def served(path: Path) -> int:
        return get(f"{review_open}gradio_api/file={path}")[0]

    assert served(workspace / image.path) == 200 and served(thumbnail) == 200
    for path in ("notes.txt", "script.py", "manifest.sqlite-wal", "manifest.sqlite", "images/notes.txt"):
        assert served(workspace / path) in (403, 404), path
    assert get(f"{review_open}gradio_api/file/{workspace / 'notes.txt'}")[0] in (403, 404)


# -- command lines ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
def test_review_port_out_of_range_is_one_line(workspace, port):
    before = tree_digest(workspace / "images")
    done = run("curate", "--workspace", workspace, "review", "--no-browser", "--port", port, timeout=120)
    assert_refused(done, "--port", "1", "65535", code=2)
    assert tree_digest(workspace / "images") == before


def test_demo_port_in_use_is_one_line(trained_bundle):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "demo.py", "--model", str(trained_bundle), "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert_refused(done, f"127.0.0.1:{port}", "in use", code=2)
    assert len(done.stderr.strip().splitlines()) == 1  # checked before Gradio starts: no uvicorn log line either


@pytest.mark.parametrize("host", ["nosuchhost.invalid", "192.0.2.1"])
def test_review_host_it_cannot_listen_on_is_one_line(workspace, host):
    done = run("curate", "--workspace", workspace, "review", "--no-browser", "--host", host, "--port", free_port())
    assert_refused(done, f"cannot serve on {host}", "--host", code=2)
    assert len(done.stderr.strip().splitlines()) == 1


def demo(*args, timeout=180) -> subprocess.CompletedProcess:
    """demo.py's main in this process (test_demo_port_in_use_is_one_line runs the real script)."""
    return run("demo", *args, cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("flag, value, words", [
    ("--port", "99999", ["--port", "65535"]), ("--port", "-5", ["--port", ">= 1"]),
    ("--port", "0", ["--port", ">= 1"]),  # was: two tracebacks, Gradio could not reach its own server
    ("--max-upload-mb", "0", ["--max-upload-mb", "> 0"]), ("--max-upload-mb", "nan", ["--max-upload-mb"]),
    ("--max-upload-mb", "-3", ["--max-upload-mb", "> 0"]), ("--max-upload-mb", "inf", ["--max-upload-mb"]),
    ("--max-batch", "0", ["--max-batch", ">= 1"]), ("--max-batch", "4.5", ["--max-batch", "whole number"]),
    ("--runtime", "int8", ["--runtime", "onnx-int8"]),
])
def test_demo_numbers_are_checked_at_the_command_line(flag, value, words, tmp_path):
    done = demo("--model", tmp_path / "none", flag, value, timeout=120)
    assert_refused(done, *words, code=2)


def facts_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "facts.csv"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("content, words", [
    ("class,kcal\nred_soup,120\n".encode("utf-16"), ["not UTF-8"]),
    (b"class,kcal\nred_soup,\xff\xfe120\n", ["not UTF-8", "byte"]),
    (b"", ["needs a header row"]),
    (b"\n\n  \n", ["needs a header row"]),
    (b"class,kcal\nred_soup,1,2,3\n", ["line 2", "4 columns", "header 2"]),
    (b'class,kcal\n"red_soup,1\n', ["facts file"]),
])
def test_demo_bad_facts_file_is_one_line(content, words, trained_bundle, tmp_path):
    facts = facts_file(tmp_path, content)
    done = demo("--model", trained_bundle, "--facts", facts)
    assert_refused(done, *words, code=2)
    assert facts.read_bytes() == content


@pytest.mark.parametrize("damage", ["missing", "empty", "not_json", "no_weights", "a_file"])
def test_demo_bad_model_folder_is_one_line(damage, trained_bundle, tmp_path):
    folder = tmp_path / "run"
    if damage != "missing":
        folder.mkdir()
    if damage in ("not_json", "no_weights"):
        for name in ("config.json", "model.safetensors", "classes.json", "metrics.json"):
            if (trained_bundle / name).exists():
                (folder / name).write_bytes((trained_bundle / name).read_bytes())
    if damage == "not_json":
        (folder / "config.json").write_text("{not json")
    if damage == "no_weights":
        (folder / "model.safetensors").unlink()
    if damage == "a_file":
        folder = tmp_path / "model.safetensors"
        folder.write_bytes(b"\0" * 64)
    before = tree_digest(tmp_path)
    done = demo("--model", folder)
    assert_refused(done, code=2)
    assert tree_digest(tmp_path) == before


# -- the demo server: auth and the upload cap ------------------------------------------------------------------
def start_demo(bundle: Path, *extra) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "demo.py", "--model", str(bundle), "--port", str(port), *extra],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"demo.py did not start: {process.stderr.read()[-2000:]}")
        time.sleep(0.5)
    return process, url


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except urllib.error.URLError:
        return False


@pytest.fixture(scope="module")
def demo_with_auth(trained_bundle):
    process, url = start_demo(trained_bundle, "--auth", f"{USER}:{PASSWORD}", "--max-upload-mb", "1")
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_demo_login_page_embeds_no_endpoint_schema(demo_with_auth, trained_bundle):
    from gradio_client import Client, handle_file

    status, page = get(demo_with_auth)
    assert status == 200 and '"auth_required":true' in page and "window.gradio_api_info = null;" in page
    for secret in ("predict", "red_soup", "Model card", "named_endpoints"):
        assert secret not in page, secret
    for route in ("config", "gradio_api/info", "gradio_api/openapi.json"):
        assert get(demo_with_auth + route)[0] == 401, route
    with pytest.raises(Exception):
        Client(demo_with_auth, verbose=False)
    client = Client(demo_with_auth, auth=(USER, PASSWORD), verbose=False)
    image = sorted((trained_bundle / "examples" / "red_soup").glob("*.jpg"))[0]
    assert client.predict(handle_file(str(image)), api_name="/predict")[0]["label"] == "red_soup"


def test_demo_caps_every_request_body_not_only_each_file(demo_with_auth):
    cookie = login_cookie(demo_with_auth)
    payload = uuid.uuid4().bytes * 20_000  # 320 KB: under the 1 MB cap per file, ten of them over it per request
    body, headers = multipart("part.jpg", payload, copies=10)
    status, _ = get(demo_with_auth + "gradio_api/upload", data=body, headers={**headers, "Cookie": cookie})
    assert status == 413
    assert files_holding(upload_folder(), payload) == []
    body, headers = multipart("one.jpg", payload)
    status, text = get(demo_with_auth + "gradio_api/upload", data=body, headers={**headers, "Cookie": cookie})
    assert status == 200 and len(json.loads(text)) == 1
    huge_webcam = json.dumps({"data": [{"url": "data:image/png;base64," + "A" * (2 * 1024 * 1024)}], "fn_index": 0,
                              "session_hash": "abc"}).encode()
    status, _ = get(demo_with_auth + "gradio_api/queue/join", data=huge_webcam,
                    headers={"Content-Type": "application/json", "Cookie": cookie})
    assert status == 413
