"""curate review: the real Gradio app on 127.0.0.1 driven by headless Chromium; every test checks the manifest."""
from __future__ import annotations

import io
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from curate import CurateError
from curate.dedup import keep_instead
from curate.review import launch
from curate.views import Bulk, View, decide_many, next_after_decision, order_key, page_of, step
from curate.workspace import Workspace, read_rows, select_images

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# category → (images, which get the "blurry" flag); each browser test works in its own category
CATEGORIES = {"Pad Thai": 8, "pho": 6, "ramen": 8, "sushi": 6, "tacos": 6, "bibimbap": 4, "gyoza": 3, "curry": 4, "dal": 4}
TIMEOUT_MS = 15_000


def jpeg_bytes(seed: int, size=(240, 180)) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randint(0, size[0] - 30), rng.randint(0, size[1] - 30)
        draw.ellipse((x, y, x + 30, y + 25), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def make_workspace(root: Path) -> Path:
    seed = 0
    with Workspace(root) as ws:
        for category, n in CATEGORIES.items():
            for i in range(n):
                seed += 1
                ws.add_image(jpeg_bytes(seed), category, source="bing", query=f"{category} dish",
                             source_url=f"https://example.com/{seed}.jpg", flags=("blurry",) if i % 3 == 0 else (),
                             phash=random.Random(seed).getrandbits(64))
        # sushi: one near-duplicate group of three (the first kept, 2 and 4 bits away)
        sushi = ws.list_images(category="sushi")
        kept = sushi[0]
        ws.set_hashes("phash", {sushi[1].id: kept.phash ^ 0b11, sushi[2].id: kept.phash ^ 0b1111})
        ws.mark_duplicates({sushi[1].id: kept.id, sushi[2].id: kept.id})
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("review") / "ws")


@pytest.fixture(scope="module")
def server(workspace):
    app = launch(workspace, port=None, open_browser=False, block=False, quiet=True)
    yield app
    app.close()
    app.curate_workspace.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#rv-view .rv-stage")
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server.local_url)
    yield page
    page.close()


def manifest(workspace: Path, image_id: int):
    with Workspace(workspace, create=False) as ws:
        return ws.get(image_id)


def shown_id(page) -> int:
    return int(page.get_attribute("#rv-view .rv-stage", "data-id"))


def wait_message(page, text: str, timeout_ms: float | None = None) -> str:
    page.wait_for_function("t => document.querySelector('#rv-message').innerText.includes(t)", arg=text,
                           timeout=timeout_ms)
    return page.inner_text("#rv-message")


def choose(page, dropdown: str, option: str) -> None:
    page.click(f"{dropdown} input")
    options = page.get_attribute(f"{dropdown} input", "aria-controls")  # the list that belongs to this dropdown
    page.locator(f'#{options} li[role=option][aria-label="{option}"]').click()


def pick_category(page, name: str) -> None:
    choose(page, "#rv-category", name)
    page.wait_for_function("n => document.querySelector('#rv-meta td[data-field=category]')?.innerText === n", arg=name)


def statuses(workspace: Path, category: str) -> dict[int, str]:
    with Workspace(workspace, create=False) as ws:
        return {r.id: r.status for r in ws.list_images(category=category)}


# -- in the browser -------------------------------------------------------------------------------------------
def test_accept_and_reject_show_next_pending_and_are_in_sqlite(page, workspace):
    pick_category(page, "Pad Thai")
    pending = [i for i, s in statuses(workspace, "Pad Thai").items() if s == "pending"]
    first = shown_id(page)
    assert first == pending[0]
    page.click("#rv-accept")
    wait_message(page, f"#{first} accepted")
    assert manifest(workspace, first).status == "accepted"
    assert shown_id(page) == pending[1]  # the next pending one, at once
    page.click("#rv-reject")
    wait_message(page, f"#{pending[1]} rejected")
    assert manifest(workspace, pending[1]).status == "rejected"
    assert shown_id(page) == pending[2]
    progress = page.inner_text("#rv-progress")
    assert "accepted 1" in progress and "rejected 1" in progress and f"pending {len(pending) - 2}" in progress
    # the grid marks both
    assert "rv-accepted" in page.get_attribute(f'#rv-grid [data-id="{first}"]', "class")
    assert "rv-rejected" in page.get_attribute(f'#rv-grid [data-id="{pending[1]}"]', "class")
    # Gradio's run history stays off: it would keep every answer (the workspace's HTML) in the browser's storage and
    # rewrite it on each key press, slowing every decision more than the last (60 -> 190 ms over 40 of them)
    stored = page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('gradio:run-history'))")
    assert stored == []


def test_keyboard_shortcuts_are_listed_and_work(page, workspace):
    keys = page.inner_text("#rv-shortcuts")
    for key in ("a", "r", "u", "j", "k"):
        assert f"{key}" in keys
    pick_category(page, "tacos")
    ids = list(statuses(workspace, "tacos"))
    assert shown_id(page) == ids[0]
    page.keyboard.press("j")
    page.wait_for_function(f"document.querySelector('#rv-view .rv-stage').dataset.id === '{ids[1]}'")
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"document.querySelector('#rv-view .rv-stage').dataset.id === '{ids[2]}'")
    page.keyboard.press("k")
    page.wait_for_function(f"document.querySelector('#rv-view .rv-stage').dataset.id === '{ids[1]}'")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(f"document.querySelector('#rv-view .rv-stage').dataset.id === '{ids[0]}'")
    page.keyboard.press("a")
    wait_message(page, f"#{ids[0]} accepted")
    assert manifest(workspace, ids[0]).status == "accepted"
    page.keyboard.press("r")
    wait_message(page, f"#{ids[1]} rejected")
    assert manifest(workspace, ids[1]).status == "rejected"
    page.keyboard.press("u")
    wait_message(page, f"undone: #{ids[1]} is pending")
    assert manifest(workspace, ids[1]).status == "pending"
    assert shown_id(page) == ids[1]
    page.keyboard.press("u")
    wait_message(page, f"undone: #{ids[0]} is pending")
    assert manifest(workspace, ids[0]).status == "pending"
    # typing in a text field is not a shortcut
    page.click("#rv-crop-box textarea, #rv-crop-box input")
    page.keyboard.press("a")
    page.wait_for_timeout(300)
    assert manifest(workspace, ids[0]).status == "pending"


def test_relabel_to_existing_and_new_category_and_undo(page, workspace):
    pick_category(page, "pho")
    first = shown_id(page)
    choose(page, "#rv-relabel", "ramen")
    page.click("#rv-relabel-btn")
    wait_message(page, f"#{first} relabelled to ramen")
    assert manifest(workspace, first).category == "ramen"
    assert shown_id(page) != first
    second = shown_id(page)
    page.keyboard.press("l")  # the keyboard alone: l, type a new name, Enter
    page.keyboard.type("Pad See Ew")
    page.keyboard.press("Enter")
    wait_message(page, f"#{second} relabelled to Pad See Ew")
    assert manifest(workspace, second).category == "Pad See Ew"
    with Workspace(workspace, create=False) as ws:
        assert ws.categories()["Pad See Ew"] == "pad_see_ew"
    page.click("#rv-undo")
    wait_message(page, f"undone: #{second} is pending in pho")
    assert manifest(workspace, second).category == "pho"
    page.click("#rv-undo")
    wait_message(page, f"undone: #{first} is pending in pho")
    assert manifest(workspace, first).category == "pho"


def test_suggested_label_is_shown_and_taken_with_one_key(page, workspace):
    with Workspace(workspace, create=False) as ws:
        ids = [r.id for r in ws.list_images(category="gyoza")]
        ws.set_suspicion({ids[0]: (0.93, "ramen", "looks more like ramen (91 %)")})
    pick_category(page, "gyoza")
    assert shown_id(page) == ids[0]
    why = page.inner_text("#rv-why")  # beside the image, in plain words
    assert "Why it is here: looks more like ramen (91 %)" in why and "Suggested label: ramen" in why
    assert page.inner_text("#rv-suggest").strip() == "Use suggestion (s): ramen"  # the button names what it does
    page.keyboard.press("s")
    wait_message(page, f"#{ids[0]} relabelled to ramen")
    assert manifest(workspace, ids[0]).category == "ramen"
    assert shown_id(page) == ids[1]  # on to the next pending image of the category
    assert not page.locator("#rv-suggest").is_visible()  # no suggestion for this one: no button
    assert "Suggested label" not in page.inner_text("#rv-why")
    page.keyboard.press("s")  # and the key does nothing
    page.wait_for_timeout(300)
    assert manifest(workspace, ids[1]).category == "gyoza"
    assert page.locator("#rv-message .rv-error").count() == 0
    page.keyboard.press("u")
    wait_message(page, f"undone: #{ids[0]} is pending in gyoza")
    assert manifest(workspace, ids[0]).category == "gyoza"


def test_rank_suspects_from_the_page(browser, tmp_path):
    from conftest import COLOURS, make_image

    root = tmp_path / "ws"
    with Workspace(root) as ws:
        for k, (name, colour) in enumerate(COLOURS.items()):
            for i in range(8):
                ws.add_image(make_image(tmp_path / "src" / f"{k}-{i}.jpg", colour, 10 * k + i).read_bytes(), name,
                             source="import")
        wrong = ws.add_image(make_image(tmp_path / "src" / "wrong.jpg", COLOURS["red_soup"], 99).read_bytes(),
                             "blue_cheese", source="import")  # a red soup filed under blue cheese
    app = launch(root, port=None, open_browser=False, block=False, quiet=True)
    try:
        page = open_page(browser, app.local_url)
        pick_category(page, "blue_cheese")
        page.click("#rv-score")
        # the minute it can take on a fresh workspace shows its stage and a count
        progress = wait_message(page, "embedding images", timeout_ms=60_000)
        assert re.search(r"\b\d+/25 img\b", progress), progress
        text = wait_message(page, "ranked 25 images", timeout_ms=120_000)
        assert "(25 newly embedded)" in text
        assert page.input_value("#rv-sort input") == "most suspicious first"
        assert shown_id(page) == wrong.id  # first in the category now
        assert page.inner_text("#rv-suggest").strip() == "Use suggestion (s): red_soup"
        page.keyboard.press("s")
        wait_message(page, f"#{wrong.id} relabelled to red_soup")
        page.close()
    finally:
        app.close()
        app.curate_workspace.close()
    with Workspace(root, create=False) as ws:
        assert ws.get(wrong.id).category == "red_soup"
        assert all(r.suspicion is not None for r in ws.list_images())  # the scores are in the manifest


def test_crop_drawn_previewed_typed_reset_and_undone(page, workspace):
    pick_category(page, "bibimbap")
    image_id = shown_id(page)
    record = manifest(workspace, image_id)
    box = page.locator("#rv-view .rv-stage img").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.8, steps=6)
    page.mouse.up()
    wait_message(page, f"#{image_id} crop ")
    crop = manifest(workspace, image_id).crop
    expected = (0.25 * record.width, 0.2 * record.height, 0.75 * record.width, 0.8 * record.height)
    assert crop is not None and all(abs(a - b) <= 2 for a, b in zip(crop, expected)), (crop, expected)
    assert page.get_attribute("#rv-crop-preview .rv-preview", "data-crop") == ",".join(map(str, crop))
    assert page.locator("#rv-view .rv-crop").count() == 1
    assert manifest(workspace, image_id).status == "pending"  # a crop is not a decision on the status
    page.fill("#rv-crop-box textarea, #rv-crop-box input", "10, 20, 110, 100")
    page.click("#rv-crop-save")
    wait_message(page, f"#{image_id} crop 10,20,110,100")
    assert manifest(workspace, image_id).crop == (10, 20, 110, 100)
    page.fill("#rv-crop-box textarea, #rv-crop-box input", "1,2,3")
    page.click("#rv-crop-save")
    wait_message(page, "crop must be x0,y0,x1,y1")
    assert manifest(workspace, image_id).crop == (10, 20, 110, 100)
    page.keyboard.press("x")
    wait_message(page, f"#{image_id} crop reset")
    assert manifest(workspace, image_id).crop is None
    assert page.locator("#rv-crop-preview .rv-preview").count() == 0
    page.keyboard.press("x")  # nothing to reset now: it says so, and logs nothing to undo
    wait_message(page, f"#{image_id} has no crop to reset")
    page.keyboard.press("u")
    wait_message(page, f"undone: #{image_id}")
    assert manifest(workspace, image_id).crop == (10, 20, 110, 100)
    # the original file is never touched
    assert (workspace / record.path).stat().st_size == record.bytes


def test_state_survives_a_page_reload_and_two_tabs_lose_no_update(browser, server, workspace):
    first, second = open_page(browser, server.local_url), open_page(browser, server.local_url)
    try:
        for tab in (first, second):
            pick_category(tab, "ramen")
        second.keyboard.press("j")  # the tabs look at different images
        second.wait_for_function(f"document.querySelector('#rv-view .rv-stage').dataset.id !== '{shown_id(first)}'")
        a, b = shown_id(first), shown_id(second)
        first.keyboard.press("a")
        second.keyboard.press("r")  # both at once: each tab sends its own image id
        wait_message(first, f"#{a} accepted")
        wait_message(second, f"#{b} rejected")
        assert (manifest(workspace, a).status, manifest(workspace, b).status) == ("accepted", "rejected")
        # the first tab sees the second tab's decision on its next action (everything is read from SQLite)
        first.keyboard.press("j")
        first.wait_for_function("document.querySelector('#rv-progress').innerText.includes('rejected 1')")
        first.reload()
        first.wait_for_selector("#rv-view .rv-stage")
        pick_category(first, "ramen")
        assert "accepted 1" in first.inner_text("#rv-progress") and "rejected 1" in first.inner_text("#rv-progress")
        assert "rv-rejected" in first.get_attribute(f'#rv-grid [data-id="{b}"]', "class")
    finally:
        first.close()
        second.close()


def test_grid_click_opens_image_and_filters_narrow_the_grid(page, workspace):
    pick_category(page, "Pad Thai")
    ids = list(statuses(workspace, "Pad Thai"))
    target = ids[-1]
    page.click(f'#rv-grid [data-id="{target}"]')
    page.wait_for_function(f"document.querySelector('#rv-view .rv-stage').dataset.id === '{target}'")
    assert page.inner_text("#rv-meta td[data-field='source URL']") == manifest(workspace, target).source_url
    choose(page, "#rv-flag", "blurry")
    page.wait_for_function("[...document.querySelectorAll('#rv-grid .rv-cell')].length === 3")
    with Workspace(workspace, create=False) as ws:
        blurry = {r.id for r in ws.list_images(category="Pad Thai", flag="blurry")}
    shown = {int(e) for e in page.eval_on_selector_all("#rv-grid .rv-cell", "els => els.map(e => e.dataset.id)")}
    assert shown == blurry
    # a view with no image: the buttons that act on one are off, and so are their keys
    choose(page, "#rv-status", "duplicate")
    page.wait_for_selector("#rv-view .rv-empty")
    assert page.eval_on_selector("#rv-accept", "b => getComputedStyle(b).pointerEvents") == "none"
    page.keyboard.press("a")
    page.wait_for_timeout(300)
    assert page.inner_text("#rv-message").strip() == ""


def test_bulk_actions_ask_first_and_spare_images_added_meanwhile(page, workspace):
    pick_category(page, "ramen")
    page.click("#rv-bulk")  # open the accordion
    choose(page, "#rv-bulk-flag", "blurry")
    before = statuses(workspace, "ramen")
    page.click("#rv-bulk-reject")
    page.wait_for_selector("#rv-confirm-text .rv-confirm-text")
    assert "stop" in page.get_attribute("#rv-confirm", "class")  # rejecting is
    page.click("#rv-cancel")
    page.wait_for_selector("#rv-confirm", state="hidden")
    assert statuses(workspace, "ramen") == before
    flagged = {r.id for r in Workspace(workspace, create=False).list_images(category="ramen", flag="blurry")}
    page.click("#rv-bulk-reject")
    page.wait_for_selector("#rv-confirm-text .rv-confirm-text")
    page.click("#rv-confirm")
    wait_message(page, "images flagged blurry")
    after = statuses(workspace, "ramen")
    assert all(after[i] == "rejected" for i in flagged)
    with Workspace(workspace) as ws:  # flagged off_topic by `suspects`: held back, as `accept` holds it
        held = next(i for i, s in after.items() if s == "pending")
        ws.set_flags(held, ("off_topic",))
    page.click("#rv-bulk-accept")
    n = int(page.get_attribute("#rv-confirm-text .rv-confirm-text", "data-n"))
    assert n == sum(s == "pending" for s in after.values()) - 1 and n > 0
    assert "1 with a blocking flag stay pending" in page.inner_text("#rv-confirm-text")
    assert "primary" in page.get_attribute("#rv-confirm", "class")  # accepting is not shown as a danger
    with Workspace(workspace) as ws:  # an import lands while the question is on screen
        late = ws.add_image(jpeg_bytes(999), "ramen", source="import")
    page.click("#rv-confirm")
    wait_message(page, f"accepted {n} pending images")
    final = statuses(workspace, "ramen")
    assert final[late.id] == "pending" and final[held] == "pending"
    assert sum(s == "accepted" for s in final.values()) == sum(s == "accepted" for s in after.values()) + n
    page.keyboard.press("u")  # one undo takes the whole bulk accept back
    wait_message(page, f"undone: bulk action on {n} images")
    assert statuses(workspace, "ramen") == {**after, late.id: "pending"}


def test_duplicates_view_marks_the_kept_one_and_switches_it(page, workspace):
    pick_category(page, "sushi")
    page.get_by_role("tab", name="Duplicates").click()
    group = page.wait_for_selector("#rv-duplicates .rv-group")
    kept = int(group.get_attribute("data-kept"))
    members = [int(e) for e in page.eval_on_selector_all("#rv-duplicates .rv-group .rv-dup", "els => els.map(e => e.dataset.id)")]
    assert len(members) == 3 and members[0] == kept
    assert page.locator("#rv-duplicates .rv-kept .rv-kept-mark").count() == 1
    assert "2 bits" in page.inner_text(f'#rv-duplicates .rv-dup[data-id="{members[1]}"]')
    page.click(f'#rv-duplicates [data-keep="{members[2]}"]')
    page.wait_for_selector(f'#rv-duplicates .rv-group[data-kept="{members[2]}"]')
    new_kept, old_kept, other = (manifest(workspace, i) for i in (members[2], kept, members[1]))
    assert new_kept.status == "pending" and new_kept.duplicate_of is None
    assert (old_kept.status, old_kept.duplicate_of) == ("duplicate", members[2])
    assert (other.status, other.duplicate_of) == ("duplicate", members[2])
    assert page.inner_text("#rv-duplicates .rv-dup-count").startswith("1 group in this category")
    # undo from this tab shows the group as it is again, without switching tabs
    page.keyboard.press("u")
    page.wait_for_selector(f'#rv-duplicates .rv-group[data-kept="{kept}"]')
    assert page.locator(f'#rv-duplicates .rv-kept[data-id="{kept}"] .rv-kept-mark').count() == 1
    assert page.locator(f'#rv-duplicates [data-keep="{members[2]}"]').count() == 1
    assert manifest(workspace, members[2]).status == "duplicate" and manifest(workspace, kept).duplicate_of is None
    assert "undone" in page.inner_text("#rv-dup-message")
    # a category dedup has hashed, without groups: no advice to run dedup
    page.get_by_role("tab", name="Review").click()
    pick_category(page, "pho")
    page.get_by_role("tab", name="Duplicates").click()
    page.wait_for_function("document.querySelector('#rv-duplicates').innerText.includes('No near-duplicate groups in this category')")
    assert "dedup" not in page.inner_text("#rv-duplicates")


def test_a_click_the_instant_the_button_appears_acts_on_the_image_shown(browser, tmp_path):
    """The first load after the server starts: a click (and the key) from the moment Accept is in the page, every
    frame until one can act, decides the image then on screen, or is refused by a disabled button; none is lost."""
    root = tmp_path / "ws"
    with Workspace(root) as ws:
        ids = [ws.add_image(jpeg_bytes(500 + i), "soup", source="import").id for i in range(4)]
    app = launch(root, port=None, open_browser=False, block=False, quiet=True)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(TIMEOUT_MS)
        page.add_init_script("""
          window.__clicks = []; window.__errors = 0;
          const attempt = () => {
            const button = document.getElementById('rv-accept');
            if (button) {
              const stage = document.querySelector('#rv-view .rv-stage');
              window.__clicks.push({disabled: button.disabled, shown: stage ? Number(stage.dataset.id) : null});
              button.click();
              document.dispatchEvent(new KeyboardEvent('keydown', {key: 'a', bubbles: true}));
              if (!button.disabled) return;  // this one could act: stop
            }
            if (document.querySelector('#rv-message .rv-error')) window.__errors += 1;
            requestAnimationFrame(attempt);
          };
          requestAnimationFrame(attempt);
        """)
        page.goto(app.local_url)
        page.wait_for_function("window.__clicks.length && !window.__clicks[window.__clicks.length - 1].disabled")
        clicks = page.evaluate("window.__clicks")
        assert clicks[0]["disabled"] and clicks[0]["shown"] is None  # the button came before the image, disabled
        acted = clicks[-1]["shown"]
        assert acted == ids[0]
        wait_message(page, f"#{acted} accepted")
        assert statuses(root, "soup") == {ids[0]: "accepted", **{i: "pending" for i in ids[1:]}}
        assert shown_id(page) == ids[1] and page.evaluate("window.__errors") == 0
        assert page.locator("#rv-message .rv-error").count() == 0
        page.close()
    finally:
        app.close()
        app.curate_workspace.close()


def in_viewport(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["x"] >= 0 and box["y"] + box["height"] <= size["height"] \
        and box["x"] + box["width"] <= size["width"]


def test_one_screen_reason_and_buttons_beside_the_image_that_never_move(page, workspace):
    with Workspace(workspace, create=False) as ws:
        record = ws.list_images(category="bibimbap")[-1]
        ws.set_flags(record.id, ("blurry", "dark"))
        ws.set_suspicion({record.id: (0.9, "gyoza", "looks more like gyoza (88 %)")})
    for width, height in ((1280, 800), (1024, 640)):
        page.set_viewport_size({"width": width, "height": height})
        pick_category(page, "bibimbap")
        page.click(f'#rv-grid [data-id="{record.id}"]')
        page.wait_for_function(f"document.querySelector('#rv-why .rv-why')?.dataset.id === '{record.id}'")
        page.evaluate("window.scrollTo(0, 0)")
        why = page.inner_text("#rv-why")
        assert "looks more like gyoza (88 %)" in why and "Flags: blurry, dark" in why and "Suggested label: gyoza" in why
        assert f"of {len(statuses(workspace, 'bibimbap'))} images in this view" in why
        for selector in ("#rv-why .rv-why", "#rv-accept", "#rv-reject", "#rv-view .rv-stage", "#rv-grid .rv-current",
                         "#rv-message"):
            assert in_viewport(page, selector), (width, height, selector, page.locator(selector).bounding_box())
        # a long message does not move the buttons
        before = page.locator("#rv-accept").bounding_box()
        page.fill("#rv-crop-box textarea, #rv-crop-box input", ",".join(["12345.678"] * 12))
        page.click("#rv-crop-save")
        wait_message(page, "crop must be x0,y0,x1,y1")
        page.evaluate("window.scrollTo(0, 0)")
        assert page.locator("#rv-message").bounding_box()["height"] < 80
        assert page.locator("#rv-accept").bounding_box() == before
    # on a phone the strip is below the image: a thumbnail click brings the image into view
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    target = statuses(workspace, "bibimbap")
    first = next(iter(target))
    page.click(f'#rv-grid [data-id="{first}"]')
    page.wait_for_function(f"document.querySelector('#rv-view .rv-stage').dataset.id === '{first}'")
    top = page.locator("#rv-view").bounding_box()["y"]
    assert 0 <= top < 844 / 2, top


def test_all_categories_one_queue_by_suspicion_bulk_reject_across_and_filters_kept_on_reload(browser, server, workspace):
    with Workspace(workspace) as ws:
        curry, dal = ws.list_images(category="curry"), ws.list_images(category="dal")
        ws.set_suspicion({curry[1].id: (0.99, "dal", "looks more like dal (80 %)"), dal[2].id: (0.98, None, "far from its class"),
                          curry[3].id: (0.97, None, "blurry")})
        grey = [curry[0].id, curry[2].id, dal[0].id, dal[3].id]
        for image_id in grey:
            ws.set_flags(image_id, ("grayscale",))
    page = open_page(browser, server.local_url)
    try:
        pick_category(page, "curry")
        choose(page, "#rv-category", "all categories")
        choose(page, "#rv-sort", "most suspicious first")
        page.wait_for_function(f"document.querySelector('#rv-view .rv-stage').dataset.id === '{curry[1].id}'")
        page.keyboard.press("a")  # the next in the queue is in another category
        wait_message(page, f"#{curry[1].id} accepted")
        assert shown_id(page) == dal[2].id and "dal" in page.inner_text("#rv-why .rv-filed")
        page.keyboard.press("r")
        wait_message(page, f"#{dal[2].id} rejected")
        assert shown_id(page) == curry[3].id
        # the sort and the category survive a reload
        page.reload()
        page.wait_for_selector("#rv-view .rv-stage")
        page.wait_for_function("document.querySelector('#rv-sort input').value === 'most suspicious first'")
        assert page.input_value("#rv-category input") == "all categories"
        assert shown_id(page) == curry[3].id
        # a flag filter over all categories, and one bulk action across them
        choose(page, "#rv-flag", "grayscale")
        page.wait_for_function("document.querySelectorAll('#rv-grid .rv-cell').length === 4")
        shown = {int(e) for e in page.eval_on_selector_all("#rv-grid .rv-cell", "els => els.map(e => e.dataset.id)")}
        assert shown == set(grey)
        page.click("#rv-bulk")
        choose(page, "#rv-bulk-flag", "grayscale")
        page.click("#rv-bulk-reject")
        page.wait_for_selector("#rv-confirm-text .rv-confirm-text")
        assert page.get_attribute("#rv-confirm-text .rv-confirm-text", "data-n") == "4"
        assert "Reject all 4 images flagged grayscale in all categories?" in page.inner_text("#rv-confirm-text")
        page.click("#rv-confirm")
        wait_message(page, "rejected 4 images flagged grayscale")
        with Workspace(workspace, create=False) as ws:
            assert {ws.get(i).status for i in grey} == {"rejected"}
        page.keyboard.press("u")
        wait_message(page, "undone: bulk action on 4 images")
        with Workspace(workspace, create=False) as ws:
            assert {ws.get(i).status for i in grey} == {"pending"}
    finally:
        page.close()


def test_serves_no_file_outside_the_workspace(server, workspace, tmp_path):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg_bytes(5))
    image = select_images(Workspace(workspace, create=False), limit=1)[0]

    def status_of(path) -> int:
        try:
            with urllib.request.urlopen(f"{server.local_url}gradio_api/file={path}") as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    assert status_of(workspace / image.path) == 200
    assert status_of(outside) == 403
    assert status_of("/etc/passwd") == 403
    assert status_of(workspace / "manifest.sqlite") == 403
    assert status_of(f"{workspace}/../{outside.parent.name}/secret.jpg") == 403
    assert server.server_name == "127.0.0.1"


# -- a real server process: restart, auth, CLI errors ----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cli(workspace: Path, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "curate", "--workspace", str(workspace), "review", "--no-browser",
                             "--port", str(port), *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode())
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("review server did not start in 60 s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_decisions_survive_a_server_restart(browser, tmp_path):
    workspace = make_workspace(tmp_path / "ws")
    port = free_port()
    proc = start_cli(workspace, port)
    try:
        page = open_page(browser, f"http://127.0.0.1:{port}/")
        first = shown_id(page)
        page.keyboard.press("a")
        wait_message(page, f"#{first} accepted")
        second = shown_id(page)
        page.fill("#rv-crop-box textarea, #rv-crop-box input", "5,5,60,50")
        page.click("#rv-crop-save")
        wait_message(page, f"#{second} crop 5,5,60,50")
        page.close()
    finally:
        stop(proc)
    assert manifest(workspace, first).status == "accepted"
    proc = start_cli(workspace, port, "--auth", "cook:secret")
    try:
        page = open_page_with_login(browser, f"http://127.0.0.1:{port}/", "cook", "secret")
        assert shown_id(page) == second  # the first pending one now
        assert "accepted 1" in page.inner_text("#rv-progress")
        assert page.get_attribute("#rv-crop-preview .rv-preview", "data-crop") == "5,5,60,50"
        page.close()
        with pytest.raises(urllib.error.HTTPError) as err:  # no file without logging in
            urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/file={workspace / manifest(workspace, first).path}")
        assert err.value.code in (401, 403)
    finally:
        stop(proc)


def open_page_with_login(browser, url: str, user: str, password: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.fill("input[type=text], input[name=username]", user)
    page.fill("input[type=password]", password)
    page.keyboard.press("Enter")
    page.wait_for_selector("#rv-view .rv-stage")
    return page


def test_cli_refuses_bad_input_in_one_line(tmp_path, workspace):
    cases = [(["--workspace", str(tmp_path / "none"), "review", "--no-browser"], "no workspace at"),
             (["--workspace", str(workspace), "review", "--no-browser", "--auth", "nopassword"], "--auth wants USER:PASS")]
    for args, text in cases:
        result = subprocess.run([sys.executable, "-m", "curate", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "curate", "--workspace", str(workspace), "review", "--no-browser",
                                 "--port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"cannot serve on 127.0.0.1:{port}" in result.stderr


# -- the ordering and bulk functions, without a browser -------------------------------------------------------
def test_ordering_is_pending_first_and_sorts_by_flags_and_suspicion(tmp_path):
    workspace = make_workspace(tmp_path / "ws")
    with Workspace(workspace) as ws:
        ids = [r.id for r in ws.list_images(category="Pad Thai")]
        ws.set_status(ids[0], "accepted")
        ws.set_flags(ids[4], ("blurry", "dark"))
        view = View("Pad Thai")
        order = [r.id for r in page_of(ws, view, 0)]
        assert order == [*ids[1:], ids[0]]
        by_flags = [r.id for r in page_of(ws, View("Pad Thai", sort="flags"), 0)]
        assert by_flags[0] == ids[4] and set(by_flags[1:3]) == {ids[3], ids[6]} and by_flags[-1] == ids[0]
        # no scores yet: that order is the id order
        assert [r.id for r in page_of(ws, View("Pad Thai", sort="suspicion"), 0)] == order
        with ws.transaction() as db:
            db.execute("UPDATE images SET suspicion = 0.9 WHERE id = ?", (ids[5],))
            db.execute("UPDATE images SET suspicion = 0.5 WHERE id = ?", (ids[2],))
            db.execute("UPDATE images SET suspicion = 0.95 WHERE id = ?", (ids[3],))
        ws.set_flags(ids[3], ("off_topic",))  # held back from `accept` by a blocking flag: after the other scored ones
        by_suspicion = [r.id for r in page_of(ws, View("Pad Thai", sort="suspicion"), 0)]
        assert by_suspicion[:4] == [ids[5], ids[2], ids[3], ids[1]] and by_suspicion[-1] == ids[0]
        # after deciding ids[2], the next pending in that order comes next; at the end it wraps
        key = order_key(ws, View("Pad Thai", sort="suspicion"), ids[2])
        ws.set_status(ids[2], "rejected")
        assert next_after_decision(ws, View("Pad Thai", sort="suspicion"), key).id == ids[3]
        last = order_key(ws, view, ids[-1])
        ws.set_status(ids[-1], "rejected")
        assert next_after_decision(ws, view, last).id == ids[1]
        assert step(ws, view, order_key(ws, view, ids[1]), forward=False) is None
        assert page_of(ws, View("Pad Thai", flag="unflagged"), 0)[0].id == ids[1]


def test_bulk_and_keep_instead_are_logged_and_validated(tmp_path):
    workspace = make_workspace(tmp_path / "ws")
    with Workspace(workspace) as ws:
        assert decide_many(ws, Bulk("reject", "pho", "blurry")) == 2
        held = [r for r in ws.list_images(category="pho") if r.status == "pending"][0]
        ws.set_flags(held.id, ("off_topic",))  # a blocking flag: bulk accept leaves it pending, as `accept` does
        assert decide_many(ws, Bulk("accept", "pho")) == 3
        assert ws.count("pho", "accepted") == 3 and ws.count("pho", "rejected") == 2 and ws.get(held.id).status == "pending"
        assert len([d for d in ws.decisions(100) if not d["undone"]]) == 5
        assert len(ws.undo()) == 3  # the last bulk action, as one
        assert ws.count("pho", "accepted") == 0 and ws.count("pho", "rejected") == 2
        sushi = ws.list_images(category="sushi")
        with pytest.raises(CurateError, match="already kept"):
            keep_instead(ws, sushi[0].id)
        keep_instead(ws, sushi[1].id)
        assert ws.get(sushi[1].id).status == "pending"
        assert {ws.get(i).duplicate_of for i in (sushi[0].id, sushi[2].id)} == {sushi[1].id}


def test_workspace_read_helpers(tmp_path):
    workspace = make_workspace(tmp_path / "ws")
    with Workspace(workspace) as ws:
        page = select_images(ws, "category = ?", ["pho"], "id DESC", limit=2, offset=1)
        ids = [r.id for r in ws.list_images(category="pho")]
        assert [r.id for r in page] == [ids[-2], ids[-3]]
        assert read_rows(ws, "SELECT COUNT(*) FROM images WHERE category = ?", ["pho"]) == [(6,)]
        with pytest.raises(CurateError, match="read-only"):
            read_rows(ws, "DELETE FROM images")
    with sqlite3.connect(workspace / "manifest.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == sum(CATEGORIES.values())
