"""demo.py: a real server started by its CLI, driven by gradio_client, httpx and Playwright in headless Chromium."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

import demo
from conftest import COLOURS, ROOT, make_nonfood

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
FACTS = "class,calories,protein\nred_soup,120 kcal,4 g\nGreen Salad,80 kcal,2 g\n"
UPLOAD_CAP_MB = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(bundle: Path, log: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`python demo.py --model bundle options...` on a free port, its output in `log`; (process, url) once it serves."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "demo.py", "--model", str(bundle), "--port", str(port), *options],
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    wait_for_server(process, url, log, "demo.py")
    return process, url


def wait_for_server(process: subprocess.Popen, url: str, log: Path, what: str) -> None:
    """Until the Gradio server `process` answers at `url` (fail the test, with its log, if it exits or takes 2 min)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "config", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def feedback_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feedback") / "fb"


@pytest.fixture(scope="module")
def server(trained_bundle, tmp_path_factory, feedback_dir):
    """`python demo.py` on the tiny bundle, with facts, feedback on, a 1 MB upload cap and batches of at most 4 (fewer
    than the concurrent test sends at once), as a user would start it."""
    facts = tmp_path_factory.mktemp("facts") / "facts.csv"
    facts.write_text(FACTS)
    log = tmp_path_factory.mktemp("log") / "demo.log"
    process, url = start_demo(trained_bundle, log, "--facts", str(facts), "--max-upload-mb", str(UPLOAD_CAP_MB),
                              "--feedback", str(feedback_dir), "--max-batch", "4")
    yield url
    process.terminate()
    process.wait(timeout=20)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]  # bad uploads must not crash handlers


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def page(server):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server)
        page.wait_for_selector("input[type=file]", state="attached", timeout=30_000)
        yield page
        browser.close()


def example(bundle: Path, name: str) -> Path:
    """An image of class `name` the tiny model gets right: its own examples (new random ones can fool a 64 px model)."""
    return sorted((bundle / "examples" / name).glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def predictor(trained_bundle):
    import classify
    return classify.load(trained_bundle)


def upload(page, path: Path) -> None:
    page.locator("input[type=file]").first.set_input_files(str(path))


def wait_for_text(page, selector: str, text: str, timeout_ms: int = 30_000) -> str:
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
                           arg=[selector, text], timeout=timeout_ms)
    return page.locator(selector).inner_text()


def wait_for_heading(page, text: str, timeout_ms: int = 30_000) -> None:
    """Until the label's heading (the line after "Top 5") is `text`: the top class, not one lower in the list."""
    page.wait_for_function("(t) => { const e = document.querySelector('#prediction');"
                           " return e && e.offsetParent && e.innerText.split('\\n')[1] === t; }", arg=text,
                           timeout=timeout_ms)


# --- the API ----------------------------------------------------------------------------------------------------

def test_api_returns_top_k_as_json(client, trained_bundle, predictor):
    from gradio_client import handle_file

    for name in COLOURS:
        image = example(trained_bundle, name)
        result = client.predict(handle_file(str(image)), api_name="/predict")
        assert result[0]["label"] == name
        expected = predictor.predict(image)
        assert [(row["label"], pytest.approx(row["probability"], abs=1e-5)) for row in result] == expected
        assert sorted(row["label"] for row in result) == sorted(COLOURS)  # 3 classes: top-5 is all of them
        probabilities = [row["probability"] for row in result]
        assert probabilities == sorted(probabilities, reverse=True)
        assert abs(sum(probabilities) - 1) < 1e-3 and probabilities[0] > 0.5


# The README's lines for the plain HTTP route ($url and $photo set before them).
CURL_LINES = r"""
path=$(curl -sf -F files=@$photo $url/gradio_api/upload | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')
id=$(curl -sf -H 'Content-Type: application/json' \
  -d "{\"data\": [{\"path\": \"$path\", \"meta\": {\"_type\": \"gradio.FileData\"}}]}" \
  $url/gradio_api/call/predict | python3 -c 'import json,sys; print(json.load(sys.stdin)["event_id"])')
curl -sf $url/gradio_api/call/predict/$id
"""


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_plain_http_route_as_the_readme_shows_it(server, trained_bundle, predictor):
    """Upload, call /predict, read its event stream: the fastest route, no client library (bench/demo_latency.py)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert CURL_LINES.strip() in readme
    image = example(trained_bundle, "green_salad")
    done = subprocess.run(["bash", "-c", f"set -e\nurl={server.rstrip('/')}\nphoto={image}\n{CURL_LINES}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "event: complete" in done.stdout
    rows = json.loads(done.stdout.split("data: ", 1)[1].splitlines()[0])[0]
    assert [(row["label"], pytest.approx(row["probability"], abs=1e-5)) for row in rows] == predictor.predict(image)


def test_api_says_whether_a_photo_is_on_the_menu(client, trained_bundle, predictor, tmp_path):
    from gradio_client import handle_file

    soup = example(trained_bundle, "red_soup")
    rows = client.predict(handle_file(str(soup)), api_name="/predict")
    assert all(row["on_menu"] is True for row in rows) and rows[0]["menu_score"] == pytest.approx(
        predictor.prediction(soup).menu_score, abs=1e-3)
    paper = make_nonfood(tmp_path / "invoice.png", seed=3)
    rows = client.predict(handle_file(str(paper)), api_name="/predict")
    assert [row["on_menu"] for row in rows] == [False] * 3 and {"label", "probability"} <= set(rows[0])
    result = client.predict(handle_file(str(paper)), api_name="/classify")
    assert result["on_menu"] is False and result["menu_score"] < predictor.bundle.menu_threshold
    assert [row["label"] for row in result["predictions"]] == [row["label"] for row in rows]


def test_api_downscales_a_huge_photo_and_refuses_an_enormous_one(client, trained_bundle, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    huge = tmp_path / "huge.jpg"  # 24 MP, smooth so it stays under the 1 MB upload cap
    Image.open(example(trained_bundle, "red_soup")).resize((6000, 4000), Image.BICUBIC).save(huge, quality=70)
    assert huge.stat().st_size < UPLOAD_CAP_MB * 1024 * 1024
    assert client.predict(handle_file(str(huge)), api_name="/predict")[0]["label"] == "red_soup"

    enormous = tmp_path / "enormous.png"  # 100 MP of 1-bit pixels: a tiny file that would decode to 300 MB
    Image.new("1", (10_000, 10_000)).save(enormous)
    with pytest.raises(AppError, match="the limit is 50 MP"):
        client.predict(handle_file(str(enormous)), api_name="/predict")


def test_api_bad_inputs_give_a_clear_message(client, tmp_path, trained_bundle):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    text = tmp_path / "menu.txt"
    text.write_text("not a photo")
    with pytest.raises(AppError, match="'menu.txt' is not an image this demo can read"):
        client.predict(handle_file(str(text)), api_name="/predict")

    photo = next((trained_bundle / "examples" / "red_soup").glob("*.jpg")).read_bytes()
    headless = tmp_path / "headless.jpg"  # the header is cut: Pillow cannot even identify it
    headless.write_bytes(photo[:100])
    with pytest.raises(AppError, match="is not an image this demo can read"):
        client.predict(handle_file(str(headless)), api_name="/predict")

    truncated = tmp_path / "truncated.jpg"  # a valid header, half the pixel data
    truncated.write_bytes(photo[: len(photo) // 2])
    with pytest.raises(AppError, match="could not be read"):
        client.predict(handle_file(str(truncated)), api_name="/predict")


def test_concurrent_requests_get_the_answers_each_gets_alone(client, trained_bundle, predictor, tmp_path):
    """Sent at once, requests share the server's forward passes (classify/batching.py): each gets the prediction
    its photo gets on its own, from /predict and /classify alike, and a bad upload among them fails alone."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    photos = sorted((trained_bundle / "examples").rglob("*.jpg")) + [make_nonfood(tmp_path / "note.png", seed=1)]
    fake = tmp_path / "lunch.jpg"
    fake.write_text("not a photo")
    jobs = [(photo, api, client.submit(handle_file(str(photo)), api_name=api))
            for photo, api in zip(photos, ["/predict", "/classify"] * len(photos))]
    bad = client.submit(handle_file(str(fake)), api_name="/predict")
    for photo, api, job in jobs:
        result = job.result(timeout=120)
        rows = result if api == "/predict" else result["predictions"]
        alone = predictor.prediction(photo)
        assert [(row["label"], pytest.approx(row["probability"], abs=1e-5)) for row in rows] == alone.top, photo
        assert (rows[0]["on_menu"] if api == "/predict" else result["on_menu"]) is alone.on_menu
    with pytest.raises(AppError, match="'lunch.jpg' is not an image this demo can read"):
        bad.result(timeout=120)


def test_uploads_over_the_cap_are_refused_by_the_server(server, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(os.urandom(UPLOAD_CAP_MB * 1024 * 1024 + 1))
    response = httpx.post(server + "gradio_api/upload", files={"files": ("big.jpg", big.read_bytes())})
    assert response.status_code == 413
    small = httpx.post(server + "gradio_api/upload", files={"files": ("small.jpg", b"x" * 1000)})
    assert small.status_code == 200


def test_image_input_takes_upload_webcam_and_clipboard(server):
    config = httpx.get(server + "config").json()
    inputs = [c for c in config["components"] if c["type"] == "image" and c["props"].get("interactive") is not False]
    assert [image["props"]["sources"] for image in inputs] == [["upload", "webcam", "clipboard"]]


# --- the UI in headless Chromium --------------------------------------------------------------------------------

def test_ui_upload_shows_top_class_latency_facts_and_card(page, trained_bundle):
    soup = example(trained_bundle, "red_soup")
    upload(page, soup)
    wait_for_heading(page, "red soup")
    assert wait_for_text(page, "#facts", "120 kcal")  # the row 'red_soup' of the facts file
    latency = wait_for_text(page, "#latency", " ms")
    assert "{}x{} px photo".format(*Image.open(soup).size) in latency
    assert int(latency.split("Predicted in ")[1].split(" ms")[0]) > 0
    card = page.locator("#model-card").inner_text()
    assert "efficientnet_lite0" in card and "Accuracy" in card and "blue cheese, green salad, red soup" in card

    upload(page, example(trained_bundle, "green_salad"))
    wait_for_heading(page, "green salad")
    assert "80 kcal" in wait_for_text(page, "#facts", "80 kcal")  # 'Green Salad' in the CSV matches green_salad
    upload(page, example(trained_bundle, "blue_cheese"))
    assert "No facts listed for blue cheese" in wait_for_text(page, "#facts", "No facts")


def test_ui_example_from_the_bundle_predicts(page):
    # Examples are sorted by class, red_soup last; the previous test left "blue cheese" on top, so waiting for
    # "red soup" as the label's heading (the line after "Top 5") proves this click produced a new prediction.
    page.locator("button.gallery-item").last.click()
    page.wait_for_function("() => { const e = document.querySelector('#prediction');"
                           " return e && e.innerText.split('\\n')[1] === 'red soup'; }", timeout=30_000)


def test_ui_shows_the_heat_map_and_hides_it_when_toggled_off(page, trained_bundle):
    heat_map = page.locator("#heat-map img")
    toggle = page.locator("#heat-toggle input[type=checkbox]")
    assert toggle.is_checked()  # on by default
    upload(page, example(trained_bundle, "green_salad"))
    wait_for_heading(page, "green salad")
    heat_map.wait_for(state="visible", timeout=30_000)
    size = json.loads((trained_bundle / "config.json").read_text())["image_size"]
    assert page.evaluate("() => document.querySelector('#heat-map img').naturalWidth") == size  # the crop's size
    assert "heat map included" in wait_for_text(page, "#latency", "heat map included")
    toggle.uncheck()
    page.locator("#heat-map").wait_for(state="hidden", timeout=30_000)
    page.wait_for_function("() => !document.querySelector('#latency').innerText.includes('heat map')", timeout=30_000)
    wait_for_heading(page, "green salad")  # still predicting, without the map
    toggle.check()
    heat_map.wait_for(state="visible", timeout=30_000)


def test_ui_toggling_off_while_a_photo_is_predicted_ends_without_the_map(page, trained_bundle):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    # The photo's request is held on the network while the toggle is switched off, and let go after the toggle's
    # answer: the photo's answer, computed with the map, comes last and must not put the map back (a CI failure:
    # Gradio sends a replaced photo's change event twice, so one of them can still be on its way).
    toggle = page.locator("#heat-toggle input[type=checkbox]")
    upload(page, example(trained_bundle, "red_soup"))
    wait_for_heading(page, "red soup")
    page.locator("#heat-map img").wait_for(state="visible", timeout=30_000)
    held = []

    def hold_the_photo_pass(route):  # the photo's request is the one whose inputs are (photo, heat-map toggle on)
        data = (route.request.post_data_json or {}).get("data", [])
        if len(data) == 2 and data[1] is True and not held:
            held.append(route)
        else:
            route.continue_()

    page.route("**/queue/join*", hold_the_photo_pass)
    try:
        upload(page, example(trained_bundle, "green_salad"))
        for _ in range(300):
            if held:
                break
            page.wait_for_timeout(100)
        assert held, "the photo's prediction request never left the page"
        try:  # Gradio's second change event for a replaced photo goes through and is answered: the map shows
            wait_for_heading(page, "green salad", timeout_ms=5_000)
        except PlaywrightTimeout:
            pass  # a Gradio that sends one event: the toggle's pass then waits for the held one (always_last)
        toggle.uncheck()
        page.wait_for_timeout(1000)  # the toggle's request, were it sent at once, is answered by now
        held[0].continue_()
        assert held[0].request.response().ok  # the server took the held request
        wait_for_heading(page, "green salad")
        page.locator("#heat-map").wait_for(state="hidden", timeout=30_000)
        page.wait_for_timeout(1500)  # every answer is in by now (a pass of the tiny model takes milliseconds)
        assert not page.locator("#heat-map").is_visible()
    finally:
        page.unroute("**/queue/join*")
        toggle.check()
    page.locator("#heat-map img").wait_for(state="visible", timeout=30_000)


def test_ui_replacing_a_photo_runs_the_model_once(page, trained_bundle, monkeypatch):
    # Gradio sends a replaced photo's change event twice, side by side (4 uploads: 7 requests); the second gets the
    # first's answer. Counted in a server in this process, as `page_answer` calls; the browser is the page fixture's.
    calls, requests, real = [], [], demo.page_answer
    monkeypatch.setattr(demo, "page_answer", lambda *args: calls.append(1) or real(*args))
    app = demo.build_app(trained_bundle)
    port = free_port()
    app.queue().launch(server_port=port, prevent_thread_lock=True, css=demo.CSS, quiet=True)
    own = page.context.browser.new_page()
    try:
        own.on("request", lambda r: requests.append(r) if "queue/join" in r.url else None)
        own.goto(f"http://127.0.0.1:{port}/")
        own.wait_for_selector("input[type=file]", state="attached", timeout=30_000)
        photos = [(name, sorted((trained_bundle / "examples" / name).glob("*.jpg"))[i])
                  for i, name in ((0, "red_soup"), (0, "green_salad"), (0, "blue_cheese"), (1, "red_soup"))]
        for name, photo in photos:  # four different photos
            upload(own, photo)
            wait_for_heading(own, name.replace("_", " "))
            own.wait_for_timeout(1000)  # any second request for this photo is answered by now
    finally:
        own.close()
        app.close()
    assert len(calls) == 4, f"{len(calls)} passes for 4 photos ({len(requests)} requests)"


def test_ui_at_phone_width_shows_the_result_before_the_examples(page):
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.wait_for_function("() => document.querySelector('#input-column').getBoundingClientRect().width === 0")
        top = {name: page.locator(f"#{name}").bounding_box()["y"] for name in ("prediction", "examples")}
        photo = page.locator("#photo").bounding_box()
        assert photo["y"] < top["prediction"] < top["examples"]
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def test_ui_non_image_upload_shows_a_message(page, tmp_path):
    # A .txt is refused by the page itself; a file named .jpg that is not one reaches the server, which answers
    # with a message for the user instead of a traceback.
    text = tmp_path / "recipe.txt"
    text.write_text("2 eggs, 100 g flour")
    upload(page, text)
    page.get_by_text("Invalid file type: recipe.txt").first.wait_for(timeout=30_000)
    fake = tmp_path / "dinner.jpg"
    fake.write_text("<html>this is a web page, not a photo</html>")
    upload(page, fake)
    page.get_by_text("is not an image this demo can read").first.wait_for(timeout=30_000)
    assert "Traceback" not in page.content()


def test_ui_non_food_photo_is_not_one_of_the_dishes(page, trained_bundle, tmp_path):
    upload(page, make_nonfood(tmp_path / "receipt.png", seed=5))
    verdict = wait_for_text(page, "#verdict", "doesn't look like any of my 3 dishes")
    assert "Closest guesses:" in verdict and "%" in verdict
    page.wait_for_function("() => { const e = document.querySelector('#prediction'); return !e || !e.offsetParent; }",
                           timeout=30_000)  # no big confident label
    upload(page, example(trained_bundle, "green_salad"))  # a dish again: the label is back, the verdict gone
    wait_for_heading(page, "green salad")
    assert "my 3 dishes" not in page.locator("#verdict").inner_text()


# --- feedback: demo.py --feedback DIR -----------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def feedback_rows(folder: Path) -> list[dict]:
    with open(folder / "feedback.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def new_photo(bundle: Path, name: str, folder: Path) -> Path:
    """A photo of class `name` that is not one of the bundle's own (those are never kept): an example's pixels
    saved as PNG, so the tiny model still gets it right."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.open(example(bundle, name)).save(folder / f"{name}.png")
    return folder / f"{name}.png"


def choose(page, dropdown: str, option: str) -> None:
    page.click(f"{dropdown} input")
    options = page.get_attribute(f"{dropdown} input", "aria-controls")  # the list that belongs to this dropdown
    page.locator(f'#{options} li[role=option][aria-label="{option}"]').click()


def test_ui_right_keeps_the_photo_as_sent_and_logs_it(page, trained_bundle, predictor, feedback_dir, tmp_path):
    assert "a photo you mark Right or Wrong is kept" in page.locator("#feedback-notice").inner_text()
    soup = new_photo(trained_bundle, "red_soup", tmp_path)
    upload(page, soup)
    wait_for_heading(page, "red soup")
    page.locator("#feedback-right").click()
    assert "Kept as red soup." in wait_for_text(page, "#feedback-status", "Kept as")
    row = feedback_rows(feedback_dir)[-1]
    assert (row["label"], row["predicted"], row["verdict"]) == ("red_soup", "red_soup", "right")
    assert row["sha256"] == sha256_of(soup) and row["file"] == f"red_soup/{row['sha256']}.png"
    assert (feedback_dir / row["file"]).read_bytes() == soup.read_bytes()  # the bytes sent, not a re-encoded copy
    assert float(row["probability"]) == pytest.approx(predictor.predict(soup)[0][1], abs=1e-3)
    assert float(row["menu_score"]) == pytest.approx(predictor.prediction(soup).menu_score, abs=1e-3)


def test_ui_wrong_keeps_the_correction_and_curate_imports_it_pending(page, trained_bundle, feedback_dir, tmp_path):
    from curate.importer import import_images
    from curate.review import why_lines
    from curate.workspace import Workspace

    cheese = new_photo(trained_bundle, "blue_cheese", tmp_path / "sent")
    upload(page, cheese)
    wait_for_heading(page, "blue cheese")
    page.wait_for_function("() => document.querySelector('#feedback-status').innerText.trim() === ''")  # a new photo
    choose(page, "#feedback-wrong", "something else: …")
    page.locator("#feedback-other textarea").fill("Matcha  Cake")
    page.locator("#feedback-send").click()
    status = wait_for_text(page, "#feedback-status", "Kept as")
    assert "Kept as Matcha Cake (the model said blue cheese, " in status
    row = feedback_rows(feedback_dir)[-1]
    assert (row["label"], row["predicted"], row["verdict"]) == ("Matcha Cake", "blue_cheese", "wrong")
    assert row["sha256"] == sha256_of(cheese) and (feedback_dir / row["file"]).read_bytes() == cheese.read_bytes()
    assert row["file"].startswith("matcha_cake/")

    with Workspace(tmp_path / "ws") as ws:
        assert import_images(ws, str(feedback_dir)).added == len({r["sha256"] for r in feedback_rows(feedback_dir)})
        [record] = ws.list_images(category="Matcha Cake", status="pending")
        assert record.source == "demo-feedback" and record.sha256 == row["sha256"]
        probability = round(100 * float(row["probability"]))
        assert f"the model said blue_cheese ({probability} %), a user said Matcha Cake" in " ".join(why_lines(record))
        assert import_images(ws, str(feedback_dir)).added == 0


def test_api_feedback_keeps_the_photo_and_refuses_what_is_not_one(client, server, trained_bundle, feedback_dir,
                                                                    tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    salad = new_photo(trained_bundle, "green_salad", tmp_path)
    row = client.predict(handle_file(str(salad)), "Blue Cheese", api_name="/feedback")
    assert (row["label"], row["predicted"], row["verdict"]) == ("blue_cheese", "green_salad", "wrong")
    assert row["sha256"] == sha256_of(salad) and (feedback_dir / row["file"]).read_bytes() == salad.read_bytes()
    assert feedback_rows(feedback_dir)[-1] == {key: str(value) for key, value in row.items()}
    assert httpx.get(f"{server}gradio_api/file={feedback_dir / row['file']}").status_code == 403  # kept, not served

    before, rows = files_under(feedback_dir), len(feedback_rows(feedback_dir))
    text = tmp_path / "menu.jpg"
    text.write_text("today: pho")
    with pytest.raises(AppError, match="'menu.jpg' is not an image this demo can read"):
        client.predict(handle_file(str(text)), "pho", api_name="/feedback")
    with pytest.raises(AppError, match="Say what it is"):
        client.predict(handle_file(str(salad)), " ", api_name="/feedback")
    with pytest.raises(AppError, match="one of the model's own example photos, so nothing was kept"):
        client.predict(handle_file(str(example(trained_bundle, "green_salad"))), "green_salad", api_name="/feedback")
    big = tmp_path / "big.jpg"
    big.write_bytes(example(trained_bundle, "green_salad").read_bytes() + os.urandom(UPLOAD_CAP_MB * 1024 * 1024))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the server's cap, told to clients
        client.predict(handle_file(str(big)), "green_salad", api_name="/feedback")
    assert files_under(feedback_dir) == before and len(feedback_rows(feedback_dir)) == rows


def test_right_of_a_photo_off_the_menu_keeps_nothing(predictor, tmp_path):
    paper = make_nonfood(tmp_path / "receipt.png", seed=5)
    batcher = demo.Batcher(predictor)
    assert demo.keep_feedback(batcher, tmp_path / "fb", {"path": str(paper)}, None, frozenset()) is None
    assert "nothing was kept" in demo.feedback_message(None) and not (tmp_path / "fb").exists()
    kept = demo.keep_feedback(batcher, tmp_path / "fb", {"path": str(paper)}, "receipt", frozenset())  # a label: kept
    assert kept.predicted in predictor.classes and (tmp_path / "fb" / kept.file).read_bytes() == paper.read_bytes()


def test_feedback_is_off_by_default(trained_bundle):
    config = demo.build_app(trained_bundle).get_config_file()
    assert not {c["props"].get("elem_id") for c in config["components"]} & {"feedback", "feedback-notice"}
    assert "feedback" not in {d.get("api_name") for d in config["dependencies"]}


def test_card_shows_held_out_figures_with_an_interval_or_labels_valid(predictor, trained_bundle):
    assert demo.wilson_interval(8, 10) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    card = demo.model_card(predictor)
    assert "valid split (used to pick the epoch)" in card and f"n={predictor.metrics['n']}" in card
    assert "8-bit" not in card
    held = type("Held", (), {"bundle": predictor.bundle, "classes": predictor.classes, "metrics": predictor.metrics,
                             "held_out": {"split": "/data/test", "n": 200, "accuracy": 0.8, "top5": 0.97,
                                          "average_position": 1.4}, "int8": False})()
    card = demo.model_card(held)
    assert "80.0% on test (held out), 95% interval 73.9-85.0%, n=200" in card and "97.0%" in card
    assert "used to pick the epoch" not in card
    # served with --runtime onnx-int8: the card says the figures are the full model's, not the copy's
    import classify
    int8 = classify.load(trained_bundle, runtime="onnx-int8")
    assert "**Runs**: an 8-bit copy of the model" in demo.model_card(int8)


def test_card_says_what_the_on_menu_rule_keeps_and_what_it_was_trained_to_reject(predictor, exposed_bundle):
    import classify

    # 12 valid photos promise 12/13 of new ones kept, not the 95 % asked for (classify.menu.promised_keep)
    assert "**Other photos**: a photo unlike these dishes is said to be none of them (the rule keeps 92% of photos " \
           "like its valid ones)\n" in demo.model_card(predictor)
    assert "(the rule keeps 95% of photos like its valid ones)" in demo.menu_rows(predictor.bundle, 220)[0][1]
    assert "; trained to reject what looks like 12 photos of other things" in demo.model_card(
        classify.load(exposed_bundle))


def test_card_names_backbones_side_by_side_in_words_a_phone_can_wrap():
    assert demo.backbone_words("efficientnet_lite0") == "`efficientnet_lite0`"
    assert demo.backbone_words("efficientnet_lite0+tv:resnet18") == "`efficientnet_lite0` + `tv:resnet18` side by side"


def test_verdict_asks_when_the_top_two_are_close():
    from classify.predict import Prediction
    assert demo.verdict_markdown(Prediction([("baklava", 0.45), ("apple_pie", 0.40)], True, 0.9), 10) == \
        "### baklava or apple pie?"
    assert demo.verdict_markdown(Prediction([("baklava", 0.9), ("apple_pie", 0.05)], True, 0.9), 10) == ""
    off = demo.verdict_markdown(Prediction([("baklava", 0.41), ("apple_pie", 0.22)], False, 0.2), 10)
    assert off.startswith("### This doesn't look like any of my 10 dishes") and "baklava 41%, apple pie 22%" in off


# --- the command line -------------------------------------------------------------------------------------------

def test_no_run_prints_how_to_train_one_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "demo.py", "--runs-dir", str(tmp_path / "runs")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "python -m classify train --data" in result.stderr


def touch_bundle(folder: Path, mtime: float, weights: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
        os.utime(folder / "model.safetensors", (mtime, mtime))
    return folder


def test_find_latest_run_takes_the_newest_complete_bundle(tmp_path):
    runs = tmp_path / "runs"
    assert demo.find_latest_run(runs) is None
    touch_bundle(runs / "old", 1_000_000)
    newest = touch_bundle(runs / "sweep" / "b", 2_000_000)
    touch_bundle(runs / "broken", 3_000_000, weights=False)
    assert demo.find_latest_run(runs) == newest


@pytest.mark.parametrize("case", ["missing_run", "facts_one_column", "facts_duplicate", "facts_no_class",
                                  "facts_missing", "bad_auth", "feedback_foreign_log"])
def test_bad_command_lines_print_one_line_and_fail(case, trained_bundle, tmp_path, capsys):
    facts = tmp_path / "facts.csv"
    argv = ["--model", str(trained_bundle), "--port", str(free_port())]  # 7860 may be taken on this machine
    if case == "missing_run":
        argv = ["--model", str(tmp_path / "nope")]
    elif case == "facts_one_column":
        facts.write_text("class\nred_soup\n")
    elif case == "facts_duplicate":
        facts.write_text("class,kcal\nred_soup,1\nred_soup,2\n")
    elif case == "facts_no_class":
        facts.write_text("class,kcal\npho,350\n")
    elif case == "bad_auth":
        argv += ["--auth", "admin"]
    elif case == "feedback_foreign_log":
        (tmp_path / "feedback.csv").write_text("dish,price\npho,9\n")
        argv += ["--feedback", str(tmp_path)]
    if case.startswith("facts"):
        argv += ["--facts", str(facts)]
    assert demo.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    expected = {"missing_run": "not found", "facts_one_column": "needs a header row", "facts_duplicate": "twice",
                "facts_no_class": "names none of the model's classes", "facts_missing": "cannot read facts file",
                "bad_auth": "USER:PASS", "feedback_foreign_log": "is not a feedback log"}[case]
    assert expected in error


def test_read_facts_keeps_every_column(tmp_path):
    facts = tmp_path / "facts.csv"
    facts.write_text("\ufeffdish,calories,protein,description\nred_soup,120,4,\"tomato, basil\"\n\n")
    assert demo.read_facts(facts) == {"red_soup": {"calories": "120", "protein": "4", "description": "tomato, basil"}}
