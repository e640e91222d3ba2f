"""The review-and-crop UI: a Gradio Blocks app over a workspace manifest (`python -m curate review`).

The page is built in `build_app`; every event handler is a plain function below that reads the manifest afresh, writes
before it answers, and returns a dict keyed by component (only what it changes). The queries live in curate/views.py.
"""
from __future__ import annotations

import functools
import hashlib
import html
import math
import tempfile
import inspect
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from classify.serving import guard, why_unservable

from curate import CurateError
from curate.dedup import hamming, keep_instead
from curate.images import EXTENSIONS
from curate.quality import FLAGS, is_held
from curate.thumbnails import (BROWSER_FORMATS, GRID_PX, THUMBNAILS_DIR, BackgroundCopies, cached_copy, upright_size,
                               view_file)
from curate.views import (PAGE_SIZE, Bulk, View, count_in, decide_many, duplicate_groups, first_category_with_pending,
                          first_of, nearest_duplicate, next_after_decision, order_key, page_of, plan, position_of,
                          progress_counts, step, unhashed_count)
from curate.workspace import IMAGES_DIR, MANIFEST, STATUSES, ImageRecord, Workspace

# A typed crop number beyond this is a typo, not a position: no image within the pixel limit has a side this long.
CROP_LIMIT_PX = 100_000
MAX_REQUEST_BYTES = 1024 * 1024  # the UI sends clicks, crop boxes and category names: a few KB at most
GROUPS_PER_PAGE = 20
ALL_CATEGORIES = ""  # the category picker's value for "all categories" (no category is named "": names are stripped)
STATUS_FILTERS = ("all", *STATUSES)
FLAG_FILTERS = ("any", "flagged", "unflagged", *FLAGS)
SORTS = {"oldest first": "id", "most flags first": "flags", "most suspicious first": "suspicion"}
SHORTCUTS = (("a", "accept"), ("r", "reject"), ("u", "undo"), ("j / →", "next image"), ("k / ←", "previous image"),
             ("x", "reset crop"), ("s", "relabel to the suggested label"), ("l", "type a label, Enter relabels"),
             ("n / p", "next / previous page of the strip"), ("drag on the image", "draw a crop box"))


def plural(n: int, noun: str) -> str:
    """ "1 image", "2 images" (the nouns here all take an s)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def suggestion(record: ImageRecord | None) -> str | None:
    """The label `curate suspects` suggests for `record`, if it differs from the current one."""
    if record is None or not record.suggested_label or record.suggested_label == record.category:
        return None
    return record.suggested_label


def why_lines(record: ImageRecord) -> list[str]:
    """Why this image is worth a look, in plain words, one line each (shown beside the image)."""
    lines = [f"From the demo: {feedback_note(record)}"] if feedback_note(record) else []
    if record.suspicion_reason:
        lines.append(f"Why it is here: {record.suspicion_reason}")
    elif record.suspicion is None and record.status in ("pending", "accepted"):
        lines.append("Not ranked yet (Rank suspects puts the likeliest mistakes first)")
    if suggestion(record):
        lines.append(f"Suggested label: {suggestion(record)} (press s)")
    if record.flags:
        lines.append("Flags: " + ", ".join(f.replace("_", " ") for f in record.flags))
    if is_held(record.status, record.flags):
        lines.append("Held back: the automatic accept leaves it pending until you decide")
    if record.duplicate_of is not None:
        lines.append(f"Duplicate of #{record.duplicate_of}")
    return lines


def parse_crop(text: str | None) -> tuple[float, float, float, float]:
    """A typed crop 'x0,y0,x1,y1' (pixels; spaces allowed) as 4 finite numbers, else CurateError with the reason."""
    try:
        box = tuple(float(v) for v in (text or "").replace(" ", "").split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise CurateError(f"crop must be x0,y0,x1,y1 in pixels, got {text!r}")
    if not all(math.isfinite(v) and abs(v) <= CROP_LIMIT_PX for v in box):
        raise CurateError(f"crop numbers must be pixel positions between -{CROP_LIMIT_PX:,} and {CROP_LIMIT_PX:,}, "
                          f"got {text!r}")
    return box


# -- HTML -------------------------------------------------------------------------------------------------
def file_url(path: Path) -> str:
    # relative, so it works under a proxy root path and through --share
    return "gradio_api/file=" + quote(str(path))


def _status_badge(status: str) -> str:
    return f'<span class="rv-badge rv-{status}">{status}</span>'


def progress_html(ws: Workspace, category: str | None) -> str:
    counts = progress_counts(ws, category)
    total = sum(counts.values())
    bar = "".join(f'<span class="rv-{s}" style="width:{100 * n / total:.2f}%"></span>' for s, n in counts.items() if n)
    labels = " · ".join(f'<span data-status="{s}">{s} <b>{n}</b></span>' for s, n in counts.items())
    return (f'<div class="rv-progress" data-pending="{counts["pending"]}"><div class="rv-bar">{bar}</div>'
            f'<div>{labels} — {total - counts["pending"]} of {total} decided</div></div>')


def image_html(ws: Workspace, record: ImageRecord | None, prefetch: Path | None = None) -> str:
    if record is None:
        return '<div class="rv-empty">No image matches these filters.</div>'
    path = view_file(ws, record)
    if path is None:
        return f'<div class="rv-stage rv-broken" data-id="{record.id}">image {record.id} cannot be decoded</div>'
    w, h = upright_size(ws, record)
    crop = ""
    if record.crop is not None:
        x0, y0, x1, y1 = record.crop
        crop = (f'<div class="rv-crop" style="left:{100 * x0 / w:.3f}%;top:{100 * y0 / h:.3f}%;'
                f'width:{100 * (x1 - x0) / w:.3f}%;height:{100 * (y1 - y0) / h:.3f}%"></div>')
    extra = ""
    if prefetch is not None and prefetch != path:
        # the likely next image, loaded while the user looks at this one, so a decision shows it at once
        extra = f'<img class="rv-prefetch" src="{file_url(prefetch)}" alt="" aria-hidden="true">'
    return (f'<div class="rv-stage rv-{record.status}" data-id="{record.id}" data-status="{record.status}" '
            f'style="width:min(100%, calc(var(--rv-stage-h) * {w / h:.4f}))">'
            f'<img src="{file_url(path)}" alt="image {record.id}" draggable="false" style="aspect-ratio:{w}/{h}">{crop}'
            f'<div class="rv-draw"></div></div>{extra}')


def crop_preview_html(ws: Workspace, record: ImageRecord | None) -> str:
    if record is None or record.crop is None:
        return '<div class="rv-preview-empty">No crop: the whole image is exported.</div>'
    path = view_file(ws, record)
    if path is None:
        return ""
    w, h = upright_size(ws, record)
    x0, y0, x1, y1 = record.crop
    scale = 160 / max(x1 - x0, y1 - y0)  # the preview box is at most 160 px
    return (f'<div class="rv-preview" data-crop="{x0},{y0},{x1},{y1}" style="width:{(x1 - x0) * scale:.0f}px;'
            f'height:{(y1 - y0) * scale:.0f}px"><img src="{file_url(path)}" alt="crop preview" style="width:'
            f'{w * scale:.0f}px;height:{h * scale:.0f}px;left:{-x0 * scale:.0f}px;top:{-y0 * scale:.0f}px"></div>')


def feedback_note(record: ImageRecord) -> str | None:
    """For a photo sent back from the demo: "the model said X (NN %), a user said Y"; else None."""
    if record.predicted_label is None or record.given_label is None:
        return None
    share = "" if record.predicted_probability is None else f" ({100 * record.predicted_probability:.0f} %)"
    return f"the model said {record.predicted_label}{share}, a user said {record.given_label}"


def why_html(record: ImageRecord | None, position: int, total: int, page: int, pages: int) -> str:
    """Beside the image: where it is in the view, what it is filed under, and why it is worth a look."""
    if record is None:
        return '<div class="rv-why"></div>'
    e = html.escape
    lines = "".join(f"<li>{e(line)}</li>" for line in why_lines(record))
    return (f'<div class="rv-why" data-id="{record.id}"><div class="rv-position">{position:,} of {plural(total, "image")}'
            f' in this view <span class="rv-page" data-page="{page}">· strip page {page + 1} of {pages}</span></div>'
            f'<div class="rv-filed">#{record.id} · <b>{e(record.category)}</b> · '
            f'{_status_badge(record.status)}</div><ul>{lines}</ul></div>')


def meta_html(ws: Workspace, record: ImageRecord | None) -> str:
    if record is None:
        return ""
    e = html.escape
    url = record.source_url or ""
    url_html = (f'<a href="{e(url)}" target="_blank" rel="noopener noreferrer">{e(url)}</a>'
                if url.startswith(("http://", "https://")) else e(url) or "—")
    near = nearest_duplicate(ws, record)
    near_text = "not hashed yet (dedup hashes it)" if record.phash is None else (
        "none in this category" if near is None else f"#{near[0]} at {near[1]} bits")
    query = f" · “{e(record.query)}”" if record.query else ""
    size = f"{record.width}×{record.height} px · {record.bytes / 1024:.0f} KiB · {e(record.format)}"
    rows = [("image", f"#{record.id} · {e(Path(record.path).name)}"), ("status", _status_badge(record.status)),
            ("category", e(record.category)), ("source", e(record.source) + query), ("source URL", url_html),
            ("size", size),
            ("flags", e(", ".join(record.flags)) or "none"),
            ("crop", ",".join(map(str, record.crop)) if record.crop else "none"),
            ("nearest near-duplicate", near_text),
            ("suspicion", "not scored" if record.suspicion is None else f"{record.suspicion:.2f}")]
    if feedback_note(record):
        rows.append(("demo feedback", e(feedback_note(record))))
    body = "".join(f'<tr><th>{k}</th><td data-field="{k}">{v}</td></tr>' for k, v in rows)
    return f'<div class="rv-meta" data-id="{record.id}"><table>{body}</table></div>'


def strip_html(ws: Workspace, records: list[ImageRecord], current: int | None) -> str:
    """The page's thumbnails in one scrolling row, the current one marked (STRIP_JS keeps it in sight)."""
    if not records:
        return '<div class="rv-empty">No images on this page.</div>'
    cells = []
    for record in records:
        thumb = cached_copy(ws, record, GRID_PX)
        img = f'<img src="{file_url(thumb)}" alt="" loading="lazy">' if thumb else '<div class="rv-broken">?</div>'
        flags = (f'<span class="rv-flags" title="{html.escape(", ".join(record.flags))}">⚑{len(record.flags)}</span>'
                 if record.flags else "")
        cells.append(f'<button class="rv-cell rv-{record.status}{" rv-current" if record.id == current else ""}" '
                     f'data-id="{record.id}" title="#{record.id} {record.status}">{img}'
                     f'<span class="rv-cell-label">#{record.id} {record.status}</span>{flags}</button>')
    return f'<div class="rv-grid">{"".join(cells)}</div>'


def duplicates_html(ws: Workspace, category: str | None, page: int) -> str:
    groups = duplicate_groups(ws, category)
    where = "in this category" if category is not None else "in the workspace"
    if not groups:
        unhashed = unhashed_count(ws, category)
        hint = (f" {plural(unhashed, 'image')} {'has' if unhashed == 1 else 'have'} no perceptual hash yet: "
                "<code>python -m curate dedup</code> looks at them." if unhashed else "")
        return f'<div class="rv-empty">No near-duplicate groups {where}.{hint}</div>'
    page = min(max(0, page), (len(groups) - 1) // GROUPS_PER_PAGE)
    shown = groups[page * GROUPS_PER_PAGE:(page + 1) * GROUPS_PER_PAGE]
    out = [f'<div class="rv-dup-count" data-page="{page}">{plural(len(groups), "group")} {where}; showing '
           f'{page * GROUPS_PER_PAGE + 1}–{page * GROUPS_PER_PAGE + len(shown)}</div>']
    for kept, members in shown:
        cells = []
        for record in [kept, *members]:
            thumb = cached_copy(ws, record, GRID_PX * 2)
            img = f'<img src="{file_url(thumb)}" alt="">' if thumb else '<div class="rv-broken">?</div>'
            distance = ""
            if record is not kept and record.phash is not None and kept.phash is not None:
                distance = f" · {int(hamming(record.phash, kept.phash))} bits"
            if record is kept:
                action = '<span class="rv-kept-mark">✔ kept</span>'
            else:
                action = f'<button class="rv-keep" data-keep="{record.id}">keep this one</button>'
            cells.append(f'<div class="rv-dup{" rv-kept" if record is kept else ""}" data-id="{record.id}">{img}'
                         f'<div>#{record.id} · {record.width}×{record.height}{distance}</div>{action}</div>')
        out.append(f'<div class="rv-group" data-kept="{kept.id}">{"".join(cells)}</div>')
    return "".join(out)


def message_html(text: str, error: bool = False) -> str:
    return f'<div class="rv-message{" rv-error" if error else ""}" title="{html.escape(text)}">{html.escape(text)}</div>'


# -- the page's CSS and scripts -------------------------------------------------------------------------------
CSS = """
/* the image's height: what a 640-800 px high window leaves above the strip */
#rv-view { --rv-stage-h: clamp(200px, calc(100vh - 350px), 1000px); }
@media (max-width: 640px) { #rv-view { --rv-stage-h: 40vh; } }
.rv-stage { position: relative; overflow: hidden; margin: 0 auto; line-height: 0; cursor: crosshair; user-select: none; }
.rv-stage img { display: block; width: 100%; height: auto; }
.rv-stage.rv-accepted { outline: 4px solid #16a34a; } .rv-stage.rv-rejected { outline: 4px solid #dc2626; }
.rv-stage.rv-duplicate { outline: 4px solid #9333ea; }
.rv-crop { position: absolute; border: 2px solid #facc15; box-shadow: 0 0 0 9999px rgba(0,0,0,.45); pointer-events: none; }
.rv-draw { position: absolute; display: none; border: 2px dashed #38bdf8; pointer-events: none; }
.rv-prefetch { display: none; }
.rv-preview { position: relative; overflow: hidden; border: 1px solid #888; }
.rv-preview img { position: absolute; max-width: none; }
.rv-preview-empty { font-size: .85em; color: #6b7280; }
.rv-bar { display: flex; height: 8px; border-radius: 4px; overflow: hidden; background: #e5e7eb; margin-bottom: 2px; }
.rv-progress { font-size: .85em; }
.rv-bar .rv-accepted, .rv-badge.rv-accepted { background: #16a34a; } .rv-bar .rv-rejected, .rv-badge.rv-rejected { background: #dc2626; }
.rv-bar .rv-duplicate, .rv-badge.rv-duplicate { background: #9333ea; } .rv-bar .rv-pending, .rv-badge.rv-pending { background: #9ca3af; }
.rv-badge { color: white; padding: 1px 8px; border-radius: 8px; font-size: .85em; }
.rv-why { height: 9.5em; overflow-y: auto; line-height: 1.45; }
.rv-why ul { margin: 4px 0 0 0; padding-left: 1.4em; list-style: disc; } .rv-why li { margin: 0; }
.rv-position { font-weight: 600; }
.rv-meta table { font-size: 0.85em; } .rv-meta th { text-align: left; padding-right: 10px; white-space: nowrap; }
.rv-meta td { word-break: break-all; }
#rv-grid { overflow: hidden; }
.rv-grid { display: flex; gap: 4px; overflow-x: auto; padding: 3px 3px 6px; }
.rv-cell { position: relative; flex: 0 0 auto; width: 84px; padding: 0; border: 3px solid #9ca3af; background: none;
           cursor: pointer; line-height: 0; }
.rv-cell img { width: 100%; height: 60px; object-fit: cover; }
.rv-cell.rv-accepted { border-color: #16a34a; } .rv-cell.rv-rejected { border-color: #dc2626; opacity: .6; }
.rv-cell.rv-duplicate { border-color: #9333ea; opacity: .7; } .rv-cell.rv-current { box-shadow: 0 0 0 3px #2563eb; }
.rv-cell-label { position: absolute; left: 0; bottom: 0; background: rgba(0,0,0,.6); color: white; font-size: 10px; line-height: 1.4; padding: 0 3px; }
.rv-flags { position: absolute; right: 0; top: 0; background: #f59e0b; color: black; font-size: 10px; line-height: 1.4; padding: 0 3px; }
.rv-group { display: flex; gap: 10px; padding: 8px 0; border-bottom: 1px solid #ddd; overflow-x: auto; }
.rv-dup { border: 3px solid transparent; padding: 4px; text-align: center; font-size: 12px; }
.rv-dup img { max-height: 200px; } .rv-dup.rv-kept { border-color: #16a34a; }
.rv-kept-mark { color: #16a34a; font-weight: bold; }
.rv-keep { border: 1px solid #888; border-radius: 6px; padding: 2px 8px; cursor: pointer; }
#rv-message { height: 4.4em; overflow-y: auto; }
.rv-message { font-weight: 600; line-height: 1.45; } .rv-message.rv-error { color: #dc2626; }
.rv-keys { font-size: .85em; } .rv-keys kbd { border: 1px solid #aaa; border-radius: 4px; padding: 0 5px; font-size: 0.85em; }
.rv-page { font-weight: normal; font-size: .85em; color: #6b7280; }
/* no image on screen (an empty view): the buttons that act on one are off, as the keys are (HEAD) */
.gradio-container:not(:has(#rv-view .rv-stage)) :is(#rv-accept, #rv-reject, #rv-prev, #rv-next, #rv-relabel-btn,
  #rv-crop-save, #rv-crop-reset, #rv-suggest) { opacity: .5; pointer-events: none; }
#rv-filters .block.padded { padding: 4px 10px; } #rv-filters [data-testid="block-info"] { margin-bottom: 2px; }
#rv-strip-row { gap: 4px; align-items: center; } #rv-strip-row > button { align-self: center; }
#rv-grid.block, #rv-view.block { padding: 2px; }
#rv-grid .html-container, #rv-view .html-container, #rv-why .html-container, #rv-message .html-container { padding: 0; } #rv-relabel.block.padded, #rv-crop-box.block.padded { padding: 4px 10px; }
.rv-edit-row { align-items: flex-end; }
#rv-relabel [data-testid="block-info"], #rv-crop-box [data-testid="block-info"] { margin-bottom: 2px; }
"""

# Keyboard shortcuts: one document-level listener that clicks the matching button, so a key does exactly what a click
# does (same handler, same confirmation, nothing while the button is disabled). Keys typed into a text field are left
# alone, except Enter in the relabel box, which relabels once the box has taken the typed name.
HEAD = """
<script>
document.addEventListener('keydown', (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const target = event.target;
  const visible = (el) => el && (el.checkVisibility ? el.checkVisibility() : el.offsetParent !== null);
  if (event.key === 'Enter' && target && target.closest && target.closest('#rv-relabel')) {
    setTimeout(() => document.getElementById('rv-relabel-btn')?.click(), 0);
    return;
  }
  if (target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.isContentEditable)) return;
  const buttons = {a: ['rv-accept'], r: ['rv-reject'], u: ['rv-undo', 'rv-dup-undo'], j: ['rv-next'],
                   ArrowRight: ['rv-next'], k: ['rv-prev'], ArrowLeft: ['rv-prev'], x: ['rv-crop-reset'],
                   n: ['rv-page-next'], p: ['rv-page-prev'], s: ['rv-suggest']};
  if (event.key === 'l') {
    const box = document.querySelector('#rv-relabel input');
    if (visible(box)) { event.preventDefault(); box.focus(); }
    return;
  }
  const button = (buttons[event.key] || []).map((id) => document.getElementById(id)).find(visible);
  const needsImage = button && !['rv-undo', 'rv-dup-undo', 'rv-page-next', 'rv-page-prev'].includes(button.id);
  if (needsImage && !document.querySelector('#rv-view .rv-stage')) return;  // no image on screen: nothing to act on
  if (button) { event.preventDefault(); button.click(); }
});
</script>
"""

# Every action on "this image" sends the id of the image on screen, read from the page when the click happens (not a
# server-side value an earlier, still unanswered click may have moved on): the image_id input is always the last.
SHOWN_ID_JS = """(...args) => {
  const stage = document.querySelector('#rv-view .rv-stage');
  return [...args.slice(0, -1), stage ? Number(stage.dataset.id) : null];
}"""

# Drawing a crop box: drag on the image; on release the box (fractions of the shown image) goes to Python.
CROP_JS = """
element.addEventListener('mousedown', (event) => {
  const stage = event.target.closest('.rv-stage');
  if (!stage || event.button !== 0) return;
  event.preventDefault();
  const draw = stage.querySelector('.rv-draw');
  const rect = stage.getBoundingClientRect();
  const point = (e) => [Math.min(1, Math.max(0, (e.clientX - rect.left) / rect.width)),
                        Math.min(1, Math.max(0, (e.clientY - rect.top) / rect.height))];
  const a = point(event);
  let b = a;
  const box = () => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  const move = (e) => {
    b = point(e);
    const [x0, y0, x1, y1] = box();
    Object.assign(draw.style, {display: 'block', left: x0 * 100 + '%', top: y0 * 100 + '%',
                               width: (x1 - x0) * 100 + '%', height: (y1 - y0) * 100 + '%'});
  };
  const up = (e) => {
    document.removeEventListener('mousemove', move);
    document.removeEventListener('mouseup', up);
    b = point(e);
    const [x0, y0, x1, y1] = box();
    if (x1 - x0 < 0.01 || y1 - y0 < 0.01) { draw.style.display = 'none'; return; }
    trigger('edit', {image_id: Number(stage.dataset.id), box: [x0, y0, x1, y1]});
  };
  document.addEventListener('mousemove', move);
  document.addEventListener('mouseup', up);
});
"""

# The strip: a click opens that image and brings the viewer into sight; the current cell is scrolled into the strip's
# middle whenever the strip is redrawn (by hand: scrollIntoView would also scroll the page).
STRIP_JS = """
element.addEventListener('click', (event) => {
  const cell = event.target.closest('[data-id]');
  if (!cell) return;
  trigger('click', {image_id: Number(cell.dataset.id)});
  const view = document.getElementById('rv-view');
  const top = view.getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight * 0.5) window.scrollBy({top: top - 8});
});
let pending = false;
const centre = () => {  // in the next frame, once the page is laid out: reading positions now would force a layout
  pending = false;
  const strip = element.querySelector('.rv-grid');
  const cell = strip && strip.querySelector('.rv-current');
  if (!cell) return;
  const s = strip.getBoundingClientRect(), c = cell.getBoundingClientRect();
  if (c.left < s.left || c.right > s.right) strip.scrollLeft += c.left - s.left - (s.width - c.width) / 2;
};
new MutationObserver(() => { if (!pending) { pending = true; requestAnimationFrame(centre); } })
  .observe(element, {childList: true, subtree: true, attributes: true, attributeFilter: ['class']});
"""

DUPLICATES_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('[data-keep]');
  if (button) trigger('click', {keep: Number(button.dataset.keep)});
});
"""


# -- handlers: plain functions over (the app's Review, the inputs by name) that return {component: value} --------
@dataclass(frozen=True)
class Ui:
    """The page's components, by name (see `_layout`)."""

    prefs: gr.BrowserState
    category: gr.Dropdown
    status: gr.Dropdown
    flag: gr.Dropdown
    sort: gr.Dropdown
    rank: gr.Button
    progress: gr.HTML
    review_tab: gr.Tab
    view: gr.HTML
    page_prev: gr.Button
    page_next: gr.Button
    strip: gr.HTML
    why: gr.HTML
    accept: gr.Button
    reject: gr.Button
    undo: gr.Button
    prev: gr.Button
    next: gr.Button
    message: gr.HTML
    relabel_to: gr.Dropdown
    relabel: gr.Button
    suggest: gr.Button
    crop_box: gr.Textbox
    crop_save: gr.Button
    crop_reset: gr.Button
    crop_preview: gr.HTML
    meta: gr.HTML
    bulk_accept: gr.Button
    bulk_flag: gr.Dropdown
    bulk_reject: gr.Button
    confirm_box: gr.Column
    confirm_text: gr.HTML
    confirm: gr.Button
    cancel: gr.Button
    dup_tab: gr.Tab
    dup_undo: gr.Button
    dup_prev: gr.Button
    dup_next: gr.Button
    dup_message: gr.HTML
    duplicates: gr.HTML
    shown: gr.Number  # the id of the image on screen: set by render, and read from the page (SHOWN_ID_JS) at a click
    page: gr.State
    dup_page: gr.State
    bulk: gr.State  # the Bulk the confirmation asks about

    @property
    def image_buttons(self) -> tuple[gr.Button, ...]:
        """The buttons that act on the image on screen: disabled until the first one is there (load), then off while
        none is (CSS, HEAD)."""
        return self.accept, self.reject, self.prev, self.next, self.relabel, self.crop_save, self.crop_reset

    @property
    def shown_image(self) -> list:
        """What `render` updates for another image of the same view (a decision, a move): a key press waits on these."""
        return [self.progress, self.view, self.why, self.meta, self.crop_preview, self.strip, self.page, self.message,
                self.crop_box, self.suggest, self.shown]

    @property
    def main(self) -> list:
        """Every component `render` may update: also the category lists (a relabel may add one, an undo switch)."""
        return [*self.shown_image, self.category, self.relabel_to]


@dataclass(frozen=True)
class Review:
    """What every handler works with: the workspace, the page's components, the maker of display copies."""

    ws: Workspace
    ui: Ui
    copies: BackgroundCopies
    page_size: int = PAGE_SIZE


def view_of(category: str | None, status: str | None, flag: str | None, sort: str | None) -> View:
    """The View of the filter components' values."""
    return View(category or None, status or "all", flag or "any", SORTS.get(sort, "id"))


def _get(ws: Workspace, image_id) -> ImageRecord | None:
    if image_id is None:
        return None
    try:
        return ws.get(int(image_id))
    except CurateError:
        return None


def _category_choices(ws: Workspace) -> list[tuple[str, str]]:
    return [("all categories", ALL_CATEGORIES), *((name, name) for name in ws.categories())]


def render(review: Review, view: View, record: ImageRecord | None, page: int, message: str, error: bool = False,
           lists: bool = True) -> dict:
    """The main view showing `record` in `view` on strip page `page`, with a message (and, with `lists`, the category
    lists: not on the way from a key press to the next image, where every output costs the page time)."""
    ws, ui = review.ws, review.ui
    total = count_in(ws, view)
    pages = max(1, -(-total // review.page_size))
    page = min(max(0, page), pages - 1)
    prefetch = None
    if record is not None:
        following = step(ws, view, order_key(ws, view, record.id), pending_only=True)
        if following is not None:
            prefetch = view_file(ws, following, make=False)
            if prefetch is None:  # make its display copy now, off the request path
                review.copies.request(ws, following)
    suggested = suggestion(record)
    out = {
        ui.progress: progress_html(ws, view.category),
        ui.view: image_html(ws, record, prefetch),
        ui.why: why_html(record, position_of(ws, view, record.id) if record else 0, total, page, pages),
        ui.meta: meta_html(ws, record),
        ui.shown: record.id if record else None,
        ui.crop_preview: crop_preview_html(ws, record),
        ui.strip: strip_html(ws, page_of(ws, view, page, review.page_size), record.id if record else None),
        ui.page: page,
        ui.message: message_html(message, error),
        ui.crop_box: ",".join(map(str, record.crop)) if record is not None and record.crop else "",
        ui.suggest: gr.update(value=f"Use suggestion (s): {suggested}", visible=suggested is not None),
    }
    if lists:
        out[ui.category] = gr.Dropdown(choices=_category_choices(ws), value=view.category or ALL_CATEGORIES)
        out[ui.relabel_to] = gr.Dropdown(choices=list(ws.categories()), value=None)
    return out


def shows_errors(handler):
    """A handler whose CurateError becomes a message on the page (the action did not happen)."""
    @functools.wraps(handler)
    def wrapped(review: Review, *args, category=None, status=None, flag=None, sort=None, image_id=None, page=0, **more):
        try:
            return handler(review, *args, category=category, status=status, flag=flag, sort=sort, image_id=image_id,
                           page=page, **more)
        except CurateError as err:
            view = view_of(category, status, flag, sort)
            return render(review, view, _get(review.ws, image_id), page or 0, str(err), error=True, lists=False)
    return wrapped


def load(review: Review, prefs: dict | None) -> dict:
    """The first view of a page: the filters it had before a reload (kept in the browser), else the first category
    with pending images."""
    prefs = prefs or {}
    ws = review.ws
    category = prefs.get("category")
    if category != ALL_CATEGORIES and category not in ws.categories():
        category = first_category_with_pending(ws) or ALL_CATEGORIES
    status = prefs.get("status") if prefs.get("status") in STATUS_FILTERS else "all"
    flag = prefs.get("flag") if prefs.get("flag") in FLAG_FILTERS else "any"
    sort = prefs.get("sort") if prefs.get("sort") in SORTS else next(iter(SORTS))
    view = view_of(category, status, flag, sort)
    ui = review.ui
    # the buttons were disabled until now, so that no click comes before the first image; from here on a click with
    # no image on screen is refused in the page (CSS, HEAD)
    enabled = {button: gr.update(interactive=True) for button in (*ui.image_buttons, ui.undo)}
    return {**render(review, view, first_of(ws, view), 0, ""), ui.status: status, ui.flag: flag, ui.sort: sort,
            **enabled}


@shows_errors
def show_first(review: Review, *, category, status, flag, sort, image_id, page) -> dict:
    """A filter changed: the first image of the new view (and the filters remembered for a reload)."""
    view = view_of(category, status, flag, sort)
    ui = review.ui
    return {**render(review, view, first_of(review.ws, view), 0, ""),
            ui.prefs: {"category": category or ALL_CATEGORIES, "status": status, "flag": flag, "sort": sort}}


@shows_errors
def refresh(review: Review, *, category, status, flag, sort, image_id, page) -> dict:
    """Back on the Review tab: the image shown, as the manifest has it now (nothing before the first one is shown)."""
    if image_id is None:
        return gr.skip()
    return render(review, view_of(category, status, flag, sort), _get(review.ws, image_id), page, "")


@shows_errors
def decide(review: Review, decision: str, *, category, status, flag, sort, image_id, page) -> dict:
    view, ws = view_of(category, status, flag, sort), review.ws
    record = _get(ws, image_id)
    if record is None:
        return render(review, view, first_of(ws, view), page, "no image is shown", error=True)
    key = order_key(ws, view, record.id)
    ws.set_status(record.id, decision)  # committed before the page hears about it
    return render(review, view, next_after_decision(ws, view, key), page, f"#{record.id} {decision}", lists=False)


@shows_errors
def relabel(review: Review, *, category, status, flag, sort, image_id, page, new_label) -> dict:
    view, ws = view_of(category, status, flag, sort), review.ws
    record = _get(ws, image_id)
    new_label = (new_label or "").strip()
    if record is None or not new_label:
        return render(review, view, record, page, "pick or type a category to relabel to", error=True)
    key = order_key(ws, view, record.id)
    ws.relabel(record.id, new_label)
    stays = view.category is not None and new_label == view.category  # nothing changed: stay on it
    following = ws.get(record.id) if stays else next_after_decision(ws, view, key)
    return render(review, view, following, page, f"#{record.id} relabelled to {new_label}")


@shows_errors
def use_suggestion(review: Review, **filters) -> dict:
    record = _get(review.ws, filters["image_id"])
    if suggestion(record) is None:
        view = view_of(filters["category"], filters["status"], filters["flag"], filters["sort"])
        return render(review, view, record, filters["page"], "no suggested label for this image")
    return relabel(review, **filters, new_label=suggestion(record))


@shows_errors
def undo(review: Review, *, category, status, flag, sort, image_id, page, dup_page) -> dict:
    """Take back the last decision, or bulk action, and show it (the Duplicates tab too: it may have been a switch)."""
    view, ws, ui = view_of(category, status, flag, sort), review.ws, review.ui
    restored = ws.undo()
    if not restored:
        out = render(review, view, _get(ws, image_id), page, "nothing to undo")
    else:
        record = restored[0]
        if view.category is not None and record.category != view.category:
            view = View(record.category, view.status, view.flag, view.sort)
        if len(restored) > 1:  # a bulk action: stay on the image shown, now restored with the others
            shown = _get(ws, image_id) if image_id in {r.id for r in restored} else record
            text = f"undone: bulk action on {plural(len(restored), 'image')}"
            out = render(review, view, shown, page, text)
        else:
            crop = f", crop {','.join(map(str, record.crop))}" if record.crop else ""
            text = f"undone: #{record.id} is {record.status} in {record.category}{crop}"
            out = render(review, view, record, page, text)
    return {**out, ui.duplicates: duplicates_html(ws, view.category, dup_page), ui.dup_message: out[ui.message]}


@shows_errors
def move(review: Review, forward: bool, *, category, status, flag, sort, image_id, page) -> dict:
    view, ws = view_of(category, status, flag, sort), review.ws
    record = _get(ws, image_id)
    key = order_key(ws, view, record.id) if record else None
    following = step(ws, view, key, forward) or record
    edge = "" if following is not record else ("last image in this view" if forward else "first image in this view")
    return render(review, view, following, page, edge, lists=False)


def open_image(review: Review, evt: gr.EventData, *, category, status, flag, sort, page) -> dict:
    return render(review, view_of(category, status, flag, sort), _get(review.ws, evt.image_id), page, "", lists=False)


@shows_errors
def turn_page(review: Review, delta: int, *, category, status, flag, sort, image_id, page) -> dict:
    return render(review, view_of(category, status, flag, sort), _get(review.ws, image_id), page + delta, "",
                  lists=False)


def _save_crop(review: Review, view: View, record: ImageRecord | None, box, page: int) -> dict:
    if record is None:
        return render(review, view, None, page, "no image is shown", error=True)
    if box is None and record.crop is None:
        return render(review, view, record, page, f"#{record.id} has no crop to reset", lists=False)
    record = review.ws.set_crop(record.id, box)
    text = f"#{record.id} crop " + (",".join(map(str, record.crop)) if record.crop else "reset")
    return render(review, view, record, page, text, lists=False)


@shows_errors
def crop_typed(review: Review, *, category, status, flag, sort, image_id, page, text) -> dict:
    return _save_crop(review, view_of(category, status, flag, sort), _get(review.ws, image_id), parse_crop(text), page)


@shows_errors
def crop_reset(review: Review, *, category, status, flag, sort, image_id, page) -> dict:
    return _save_crop(review, view_of(category, status, flag, sort), _get(review.ws, image_id), None, page)


def crop_drawn(review: Review, evt: gr.EventData, *, category, status, flag, sort, page) -> dict:
    view, record = view_of(category, status, flag, sort), _get(review.ws, evt.image_id)
    if record is None:
        return render(review, view, None, page, "no image is shown", error=True)
    w, h = upright_size(review.ws, record)
    fx0, fy0, fx1, fy1 = (float(v) for v in evt.box)
    return _save_crop(review, view, record, (fx0 * w, fy0 * h, fx1 * w, fy1 * h), page)


def ask_bulk(review: Review, action: str, *, category, flag=None) -> dict:
    """The first click of a bulk action: ask, with the count of what it will decide (a scrape may add more meanwhile;
    Confirm decides only what was counted)."""
    ui = review.ui
    if action == "reject" and not flag:
        return {ui.confirm_box: gr.Column(visible=True), ui.confirm_text: message_html("pick a flag first", True),
                ui.bulk: None, ui.confirm: gr.Button(visible=False)}
    bulk, n, held = plan(review.ws, Bulk(action, category or None, flag))
    where = f"in {category}" if category else "in all categories"
    if action == "accept":
        text = f"Accept all {plural(n, 'pending image')} {where}?" + (
            f" {held:,} with a blocking flag stay pending." if held else "")
    else:
        text = f"Reject all {plural(n, 'image')} flagged {flag} {where}?"
    return {ui.confirm_box: gr.Column(visible=True), ui.bulk: bulk,
            ui.confirm_text: f'<div class="rv-confirm-text" data-n="{n}">{html.escape(text)}</div>',
            ui.confirm: gr.Button(value=f"{'Accept' if action == 'accept' else 'Reject'} {n:,}", visible=True,
                                  variant="primary" if action == "accept" else "stop", interactive=n > 0)}


def close_bulk(review: Review) -> dict:
    ui = review.ui
    return {ui.confirm_box: gr.Column(visible=False), ui.confirm_text: "", ui.bulk: None}


@shows_errors
def do_bulk(review: Review, *, category, status, flag, sort, image_id, page, bulk) -> dict:
    view = view_of(category, status, flag, sort)
    if bulk is None:
        return render(review, view, _get(review.ws, image_id), page, "nothing to confirm")
    n = decide_many(review.ws, bulk)
    text = (f"accepted {plural(n, 'pending image')}" if bulk.action == "accept" else
            f"rejected {plural(n, 'image')} flagged {bulk.flag}")
    return {**render(review, view, first_of(review.ws, view), 0, text), **close_bulk(review)}


def rank_suspects(review: Review, progress=gr.Progress(track_tqdm=True), *, category, status, flag, sort, image_id,
                  page) -> dict:
    """`curate suspects` from the page: score every pending/accepted image, then order the view by it. The new images
    are embedded first, on their own, so the page can show that stage with a count (gr.Progress follows its tqdm bar);
    find_suspects then finds every vector cached."""
    from curate.embeddings import embed_records
    from curate.suspects import SCORED_STATUSES, SuspectsConfig, find_suspects

    config = SuspectsConfig()
    try:
        records = review.ws.list_images(status=SCORED_STATUSES)
        embedded = embed_records(review.ws, records, config.model, config.batch_size, progress=True)[2]
        progress(0.95, desc="ranking: cross-validating the labels")
        report = find_suspects(review.ws, config)
    except CurateError as err:
        return render(review, view_of(category, status, flag, sort), _get(review.ws, image_id), page, str(err), error=True)
    sort = next(label for label, key in SORTS.items() if key == "suspicion")
    view = view_of(category, status, flag, sort)
    held = sum(s.held for s in report.suspects)
    text = f"ranked {plural(len(report.suspects), 'image')} ({embedded:,} newly embedded): most suspicious first"
    if report.probe_accuracy is not None:
        text += f"; {report.probe_accuracy * 100:.0f} % look most like their own category"
    if held:
        text += f"; {held:,} held back by a blocking flag come last (flag filter: off_topic, ...)"
    ui = review.ui
    return {**render(review, view, first_of(review.ws, view), 0, text), ui.sort: sort,
            ui.prefs: {"category": category or ALL_CATEGORIES, "status": status, "flag": flag, "sort": sort}}


def show_duplicates(review: Review, first_page: int | None = None, *, category, dup_page) -> dict:
    """The Duplicates tab at page `dup_page` (or `first_page`: another category was picked)."""
    ui = review.ui
    dup_page = dup_page if first_page is None else first_page
    return {ui.duplicates: duplicates_html(review.ws, category or None, dup_page), ui.dup_page: dup_page}


def turn_dup_page(review: Review, delta: int, *, category, dup_page) -> dict:
    groups = len(duplicate_groups(review.ws, category or None))
    last = max(0, groups - 1) // GROUPS_PER_PAGE
    return show_duplicates(review, category=category, dup_page=min(max(0, dup_page + delta), last))


def switch_kept(review: Review, evt: gr.EventData, *, category, dup_page) -> dict:
    ui = review.ui
    try:
        record = keep_instead(review.ws, int(evt.keep))
        text, error = f"#{record.id} is now the kept image", False
    except CurateError as err:
        text, error = str(err), True
    return {ui.duplicates: duplicates_html(review.ws, category or None, dup_page),
            ui.dup_message: message_html(text, error)}


# -- the app ------------------------------------------------------------------------------------------------
def _layout(ws: Workspace, storage_key: str) -> dict:
    """Build the page's components (inside a gr.Blocks); returns them by Ui field name."""
    c: dict = {"prefs": gr.BrowserState({}, storage_key=storage_key, secret=storage_key)}
    with gr.Row(elem_id="rv-filters"):
        c["category"] = gr.Dropdown(label="Category", choices=_category_choices(ws), elem_id="rv-category",
                                    min_width=150)
        c["status"] = gr.Dropdown(label="Status", choices=list(STATUS_FILTERS), value="all", elem_id="rv-status",
                                  min_width=110)
        c["flag"] = gr.Dropdown(label="Quality flag", choices=list(FLAG_FILTERS), value="any", elem_id="rv-flag",
                                min_width=110)
        c["sort"] = gr.Dropdown(label="Order (pending first)", choices=list(SORTS), value=next(iter(SORTS)),
                                elem_id="rv-sort", min_width=185)
        c["rank"] = gr.Button("Rank suspects", elem_id="rv-score", size="md", scale=0, min_width=110)
    c["progress"] = gr.HTML(elem_id="rv-progress")
    with gr.Tabs():
        with gr.Tab("Review", id="review", render_children=True) as c["review_tab"]:
            _review_tab(c)
        with gr.Tab("Duplicates", id="duplicates") as c["dup_tab"]:
            with gr.Row():
                c["dup_prev"] = gr.Button("◀ Groups", elem_id="rv-dup-prev", size="sm", scale=0)
                c["dup_next"] = gr.Button("Groups ▶", elem_id="rv-dup-next", size="sm", scale=0)
                c["dup_undo"] = gr.Button("Undo (u)", elem_id="rv-dup-undo", size="sm", scale=0)
            c["dup_message"] = gr.HTML(elem_id="rv-dup-message")
            c["duplicates"] = gr.HTML(elem_id="rv-duplicates", js_on_load=DUPLICATES_JS)
    c["shown"] = gr.Number(visible=False)
    c["page"], c["dup_page"], c["bulk"] = gr.State(0), gr.State(0), gr.State(None)
    return c


def _review_tab(c: dict) -> None:
    """The Review tab: the image and its strip on the left; why it is here, the decisions and the edits beside it."""
    with gr.Row():
        with gr.Column(scale=3, min_width=320):
            c["view"] = gr.HTML(elem_id="rv-view", js_on_load=CROP_JS)
            with gr.Row(equal_height=True, elem_id="rv-strip-row"):
                c["page_prev"] = gr.Button("◀ (p)", elem_id="rv-page-prev", size="sm", scale=0, min_width=48)
                c["strip"] = gr.HTML(elem_id="rv-grid", js_on_load=STRIP_JS, min_width=100)
                c["page_next"] = gr.Button("(n) ▶", elem_id="rv-page-next", size="sm", scale=0, min_width=48)
        with gr.Column(scale=2, min_width=300):
            c["why"] = gr.HTML(elem_id="rv-why")
            with gr.Row():  # disabled until an image is on screen: a click before it would act on nothing
                c["accept"] = gr.Button("Accept (a)", variant="primary", elem_id="rv-accept", interactive=False, min_width=80,
                                        size="md")
                c["reject"] = gr.Button("Reject (r)", variant="stop", elem_id="rv-reject", interactive=False, min_width=80,
                                        size="md")
                c["undo"] = gr.Button("Undo (u)", elem_id="rv-undo", interactive=False, min_width=80, size="md")
            with gr.Row():
                c["prev"] = gr.Button("← Previous (k)", elem_id="rv-prev", size="sm", interactive=False, min_width=80)
                c["next"] = gr.Button("Next (j) →", elem_id="rv-next", size="sm", interactive=False, min_width=80)
            c["message"] = gr.HTML(elem_id="rv-message")
            with gr.Row(elem_classes="rv-edit-row"):
                c["relabel_to"] = gr.Dropdown(label="Relabel to (l)", allow_custom_value=True,
                                              elem_id="rv-relabel", scale=3, min_width=140)
                c["relabel"] = gr.Button("Relabel", elem_id="rv-relabel-btn", size="sm", scale=1, min_width=70,
                                         interactive=False)
                c["suggest"] = gr.Button("Use suggestion (s)", elem_id="rv-suggest", size="sm", scale=2, min_width=100,
                                         visible=False, variant="secondary")
            with gr.Row(elem_classes="rv-edit-row"):
                c["crop_box"] = gr.Textbox(label="Crop x0,y0,x1,y1 (px; or drag on the image)", elem_id="rv-crop-box",
                                           scale=3, min_width=140)
                c["crop_save"] = gr.Button("Save crop", elem_id="rv-crop-save", size="sm", scale=1, min_width=70,
                                           interactive=False)
                c["crop_reset"] = gr.Button("Reset crop (x)", elem_id="rv-crop-reset", size="sm", scale=1, min_width=70,
                                            interactive=False)
            c["crop_preview"] = gr.HTML(elem_id="rv-crop-preview")
            c["meta"] = gr.HTML(elem_id="rv-meta")
    gr.HTML('<div class="rv-keys"><b>Keys:</b> ' + " · ".join(
        f"<kbd>{html.escape(k)}</kbd> {html.escape(v)}" for k, v in SHORTCUTS) + "</div>", elem_id="rv-shortcuts")
    with gr.Accordion("Bulk actions (over the category picked, or all categories)", open=False, elem_id="rv-bulk"):
        with gr.Row():
            c["bulk_accept"] = gr.Button("Accept all remaining pending…", elem_id="rv-bulk-accept")
            c["bulk_flag"] = gr.Dropdown(label="Flag", choices=list(FLAGS), elem_id="rv-bulk-flag")
            c["bulk_reject"] = gr.Button("Reject all with this flag…", elem_id="rv-bulk-reject")
        with gr.Column(visible=False) as c["confirm_box"]:
            c["confirm_text"] = gr.HTML(elem_id="rv-confirm-text")
            with gr.Row():
                c["confirm"] = gr.Button("Confirm", variant="primary", elem_id="rv-confirm")
                c["cancel"] = gr.Button("Cancel", elem_id="rv-cancel")


def _bind(handler, *bound):
    """`handler` with its first arguments given, as a plain function whose signature and type hints Gradio reads (it
    finds gr.EventData and gr.Progress parameters by them; a bare functools.partial hides the hints)."""
    partial = functools.partial(handler, *bound)

    @functools.wraps(handler)
    def call(*args, **kwargs):
        return partial(*args, **kwargs)

    call.__signature__ = inspect.signature(partial)
    return call


def _only(outputs: list, handler):
    """`handler` answering only for `outputs`: a fast event's error path may render the full view (Gradio refuses a
    component it was not told of)."""
    wanted = {id(component) for component in outputs}

    @functools.wraps(handler)
    def call(*args, **kwargs):
        out = handler(*args, **kwargs)  # a dict keyed by components, or gr.skip() (keyed by a string)
        return {key: value for key, value in out.items() if isinstance(key, str) or id(key) in wanted}

    call.__signature__ = handler.__signature__
    return call


def _wire(review: Review, app: gr.Blocks) -> None:
    """Connect the events to the handlers. Fast events skip the queue; every action on the image on screen sends its
    id (SHOWN_ID_JS)."""
    ui = review.ui
    filters = dict(category=ui.category, status=ui.status, flag=ui.flag, sort=ui.sort, page=ui.page)
    fast = dict(show_progress="hidden", queue=False)

    def on(event, handler, *bound, more=None, outputs=None, **options):
        """Run handler(review, *bound, **filters, **more, image_id=<the image on screen>) on `event`; a key pressed again
        before the last answer is sent too (trigger_mode "once" would drop it), with the id then on screen."""
        outputs = outputs or ui.main
        event(_only(outputs, _bind(handler, review, *bound)), inputs_kwargs={**filters, **(more or {}),
              "image_id": ui.shown}, outputs=outputs, js=SHOWN_ID_JS, **{**fast, "trigger_mode": "multiple", **options})

    def on_event(event, handler, **more):
        """Run handler(review, event data, **filters) on an event the page's own JS triggers (it carries the id)."""
        event(_only(ui.shown_image, _bind(handler, review)), inputs_kwargs={**filters, **more}, outputs=ui.shown_image,
              **fast)

    buttons = [*ui.image_buttons, ui.undo]
    app.load(_bind(load, review), inputs=ui.prefs, outputs=[*ui.main, ui.status, ui.flag, ui.sort, *buttons], **fast)
    for control in (ui.category, ui.status, ui.flag, ui.sort):
        on(control.input, show_first, outputs=[*ui.main, ui.prefs])
    on(ui.review_tab.select, refresh)
    on(ui.accept.click, decide, "accepted", outputs=ui.shown_image)
    on(ui.reject.click, decide, "rejected", outputs=ui.shown_image)
    on(ui.prev.click, move, False, outputs=ui.shown_image)
    on(ui.next.click, move, True, outputs=ui.shown_image)
    on(ui.page_prev.click, turn_page, -1, outputs=ui.shown_image)
    on(ui.page_next.click, turn_page, 1, outputs=ui.shown_image)
    on(ui.relabel.click, relabel, more={"new_label": ui.relabel_to})
    on(ui.suggest.click, use_suggestion)
    on(ui.crop_save.click, crop_typed, more={"text": ui.crop_box}, outputs=ui.shown_image)
    on(ui.crop_box.submit, crop_typed, more={"text": ui.crop_box}, outputs=ui.shown_image)
    on(ui.crop_reset.click, crop_reset, outputs=ui.shown_image)
    for button in (ui.undo, ui.dup_undo):
        on(button.click, undo, more={"dup_page": ui.dup_page}, outputs=[*ui.main, ui.duplicates, ui.dup_message])
    on(ui.rank.click, rank_suspects, outputs=[*ui.main, ui.sort, ui.prefs], queue=True, show_progress="full",
       show_progress_on=[ui.message])  # queued: embedding a fresh workspace takes a minute, with a progress bar
    on_event(ui.strip.click, open_image)
    on_event(ui.view.edit, crop_drawn)
    bulk_outputs = [ui.confirm_box, ui.confirm_text, ui.bulk, ui.confirm]
    ui.bulk_accept.click(_bind(ask_bulk, review, "accept"), inputs_kwargs={"category": ui.category},
                         outputs=bulk_outputs, **fast)
    ui.bulk_reject.click(_bind(ask_bulk, review, "reject"),
                         inputs_kwargs={"category": ui.category, "flag": ui.bulk_flag}, outputs=bulk_outputs, **fast)
    on(ui.confirm.click, do_bulk, more={"bulk": ui.bulk}, outputs=[*ui.main, *bulk_outputs])
    ui.cancel.click(_bind(close_bulk, review), outputs=bulk_outputs, **fast)
    dup = dict(inputs_kwargs={"category": ui.category, "dup_page": ui.dup_page}, **fast)
    ui.dup_tab.select(_bind(show_duplicates, review), outputs=[ui.duplicates, ui.dup_page], **dup)
    ui.category.input(_bind(show_duplicates, review, 0), outputs=[ui.duplicates, ui.dup_page], **dup)
    ui.dup_prev.click(_bind(turn_dup_page, review, -1), outputs=[ui.duplicates, ui.dup_page], **dup)
    ui.dup_next.click(_bind(turn_dup_page, review, 1), outputs=[ui.duplicates, ui.dup_page], **dup)
    ui.duplicates.click(_bind(switch_kept, review), outputs=[ui.duplicates, ui.dup_message], **dup)


def build_app(workspace_dir: str | Path, page_size: int = PAGE_SIZE) -> gr.Blocks:
    """The review app over `workspace_dir`. Launch it with `launch()` (which sets the file-serving limits, CSS and
    keyboard shortcuts)."""
    ws = Workspace(workspace_dir, create=False)
    # the filters a tab had survive a reload: kept in the browser under a key of this workspace's own
    storage_key = "curate-review-" + hashlib.sha256(str(ws.root).encode()).hexdigest()[:16]
    with gr.Blocks(title="curate review") as app:
        ui = Ui(**_layout(ws, storage_key))
        review = Review(ws, ui, BackgroundCopies(), page_size)
        _wire(review, app)
    app.curate_workspace = ws  # closed by launch() when the server stops
    app.curate_copies = review.copies
    return app


def launch_options(workspace_dir: str | Path) -> dict:
    """launch() arguments that confine file serving to the images and thumbnails the UI shows, refuse uploads (the
    UI has none) and add the CSS and shortcuts."""
    root = Path(workspace_dir).resolve()
    blocked = [str(root / (MANIFEST + suffix)) for suffix in ("", "-wal", "-shm", "-journal")]
    # Gradio also serves its own upload folder; nothing here uploads, so close it too.
    blocked.append(str(Path(tempfile.gettempdir()) / "gradio"))
    shown = tuple("." + EXTENSIONS[name] for name in BROWSER_FORMATS) + (".jpeg",)  # originals and JPEG thumbnails
    middleware = guard(MAX_REQUEST_BYTES, uploads=False, file_suffixes=shown)
    options = dict(allowed_paths=[str(root / IMAGES_DIR), str(root / THUMBNAILS_DIR)], blocked_paths=blocked, css=CSS,
                   head=HEAD, max_file_size=MAX_REQUEST_BYTES, app_kwargs={"middleware": middleware})
    if "run_history" in inspect.signature(gr.Blocks.launch).parameters:
        # Gradio 6 keeps each tab's last 100 calls, inputs and outputs, in localStorage and rewrites the whole list
        # several times a call: with the review's HTML outputs a key press took 60 ms at the first decision and 190
        # ms by the 40th (setItem alone 47 ms). A review has nothing to replay, and the workspace stays out of the
        # browser's storage.
        options["run_history"] = False
    return options


def launch(workspace_dir: str | Path, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           auth: tuple[str, str] | None = None, open_browser: bool = True, block: bool = True,
           quiet: bool = False) -> gr.Blocks:
    """Serve the review app; with block=False return the running app (tests), else serve until interrupted."""
    problem = None if port is None else why_unservable(host, port)
    if problem:
        raise CurateError(f"cannot serve on {host}:{port}: {problem}")
    app = build_app(workspace_dir)
    try:
        app.launch(server_name=host, server_port=port, share=share, auth=auth, inbrowser=open_browser,
                   prevent_thread_lock=not block, quiet=quiet, show_error=True, **launch_options(workspace_dir))
    except OSError as err:
        app.curate_workspace.close()
        app.curate_copies.close()
        raise CurateError(f"cannot serve on {host}:{port}: {why_unservable(host, port) or err}") from None
    if block:
        app.curate_workspace.close()
        app.curate_copies.close()
    return app
