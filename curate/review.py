"""The review-and-crop UI: a Gradio Blocks app over a workspace manifest (`python -m curate review`)."""
from __future__ import annotations

import html
import math
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import numpy as np

from classify.serving import guard, why_unservable

from curate import CurateError
from curate.dedup import hamming
from curate.quality import BLOCKING_FLAGS, FLAGS
from curate.images import EXTENSIONS
from curate.thumbnails import BROWSER_FORMATS, GRID_PX, THUMBNAILS_DIR, cached_copy, upright_size, view_file
from curate.workspace import IMAGES_DIR, MANIFEST, STATUSES, ImageRecord, Workspace, read_rows, select_images

PAGE_SIZE = 40
# A typed crop number beyond this is a typo, not a position: no image within the pixel limit has a side this long.
CROP_LIMIT_PX = 100_000
MAX_REQUEST_BYTES = 1024 * 1024  # the UI sends clicks, crop boxes and category names: a few KB at most
GROUPS_PER_PAGE = 20
STATUS_FILTERS = ("all", *STATUSES)
FLAG_FILTERS = ("any", "flagged", "unflagged", *FLAGS)
SORTS = {"oldest first": "id", "most flags first": "flags", "most suspicious first": "suspicion"}
SHORTCUTS = (("a", "accept"), ("r", "reject"), ("u", "undo"), ("j / →", "next image"), ("k / ←", "previous image"),
             ("x", "reset crop"), ("s", "relabel to the suggested label"), ("l", "go to the relabel box"),
             ("n / p", "next / previous grid page"), ("drag on the image", "draw a crop box"))

# True for an image with a flag that stops `accept` (curate.quality.BLOCKING_FLAGS).
_BLOCKED_SQL = "(" + " OR ".join(f"(',' || flags || ',') LIKE '%,{f},%'" for f in BLOCKING_FLAGS) + ")"

# Sort keys, ascending; every ordering puts pending images first and ends with the id so it is total.
_SORT_SQL = {
    "id": "abs(0)",  # a constant (a bare 0 would mean "column 0" to ORDER BY)
    "flags": "-(length(flags) - length(replace(flags, ',', '')) + (flags != ''))",
    # highest first, the pending images a blocking flag holds back after the others (curate.suspects' order), unscored last
    "suspicion": f"COALESCE(-suspicion + 2 * (status = 'pending' AND {_BLOCKED_SQL}), 1e308)",
}


@dataclass(frozen=True)
class View:
    """What one browser tab is looking at: a category and its filters (component values, never globals)."""

    category: str
    status: str = "all"
    flag: str = "any"
    sort: str = "id"

    def where(self) -> tuple[str, list]:
        clauses, params = ["category = ?"], [self.category]
        if self.status != "all":
            clauses.append("status = ?")
            params.append(self.status)
        if self.flag == "flagged":
            clauses.append("flags != ''")
        elif self.flag == "unflagged":
            clauses.append("flags = ''")
        elif self.flag != "any":
            clauses.append("(',' || flags || ',') LIKE ?")
            params.append(f"%,{self.flag},%")
        return " AND ".join(clauses), params


def has_suspicion(ws: Workspace) -> bool:
    """Whether the manifest has a `suspicion` score column (added by curate.suspects when it exists)."""
    return any(row[1] == "suspicion" for row in read_rows(ws, "PRAGMA table_info(images)"))


def _key_sql(ws: Workspace, sort: str) -> str:
    if sort == "suspicion" and not has_suspicion(ws):
        sort = "id"
    return f"(status != 'pending'), {_SORT_SQL.get(sort, 'abs(0)')}, id"


def page_of(ws: Workspace, view: View, page: int, page_size: int = PAGE_SIZE) -> list[ImageRecord]:
    where, params = view.where()
    return select_images(ws, where, params, _key_sql(ws, view.sort), limit=page_size, offset=page * page_size)


def count_in(ws: Workspace, view: View) -> int:
    where, params = view.where()
    return read_rows(ws, f"SELECT COUNT(*) FROM images WHERE {where}", params)[0][0]


def order_key(ws: Workspace, view: View, image_id: int) -> tuple | None:
    """Where an image sits in the view's ordering (a row value to compare with)."""
    rows = read_rows(ws, f"SELECT {_key_sql(ws, view.sort)} FROM images WHERE id = ?", (image_id,))
    return tuple(rows[0]) if rows else None


def step(ws: Workspace, view: View, key: tuple | None, forward: bool = True, pending_only: bool = False) -> ImageRecord | None:
    """The image after (or before) `key` in the view's ordering; None at the end."""
    where, params = view.where()
    order = _key_sql(ws, view.sort)
    if pending_only:
        where += " AND status = 'pending'"
    if key is not None:
        where += f" AND ({order}) {'>' if forward else '<'} (?, ?, ?)"
        params = [*params, *key]
    if not forward:
        order = ", ".join(f"{part.strip()} DESC" for part in _split_order(order))
    found = select_images(ws, where, params, order, limit=1)
    return found[0] if found else None


def _split_order(order: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in order:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def next_after_decision(ws: Workspace, view: View, key: tuple | None) -> ImageRecord | None:
    """After deciding the image at `key`: the next pending image of the view (wrapping), else the next image."""
    return (step(ws, view, key, pending_only=True) or step(ws, view, None, pending_only=True)
            or step(ws, view, key) or step(ws, view, None))


def progress_counts(ws: Workspace, category: str) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for status, n in read_rows(ws, "SELECT status, COUNT(*) FROM images WHERE category = ? GROUP BY status", (category,)):
        counts[status] = n
    return counts


def nearest_duplicate(ws: Workspace, record: ImageRecord) -> tuple[int, int] | None:
    """(image id, Hamming distance in bits) of the nearest other phash in the category, or None."""
    if record.phash is None:
        return None
    rows = read_rows(ws, "SELECT id, phash FROM images WHERE category = ? AND id != ? AND phash IS NOT NULL "
                     "AND status != 'rejected'", (record.category, record.id))
    if not rows:
        return None
    ids, values = np.array(rows, dtype=np.int64).T
    dist = hamming(values.view(np.uint64), np.uint64(record.phash))
    best = int(np.argmin(dist))
    return int(ids[best]), int(dist[best])


def duplicate_groups(ws: Workspace, category: str) -> list[tuple[ImageRecord, list[ImageRecord]]]:
    """Near-duplicate groups of a category: (kept image, its duplicates), biggest groups first."""
    dups = select_images(ws, "category = ? AND status = 'duplicate' AND duplicate_of IS NOT NULL", (category,),
                         "duplicate_of, id")
    by_kept: dict[int, list[ImageRecord]] = {}
    for record in dups:
        by_kept.setdefault(record.duplicate_of, []).append(record)
    groups = [(ws.get(kept), members) for kept, members in by_kept.items()]
    return sorted(groups, key=lambda g: (-len(g[1]), g[0].id))


def keep_instead(ws: Workspace, image_id: int) -> ImageRecord:
    """Make a duplicate the kept image of its group: it takes the old kept one's status, the rest point at it (one
    batch: one undo restores the group)."""
    with ws.batch():
        record = ws.get(image_id)
        if record.status != "duplicate" or record.duplicate_of is None:
            raise CurateError(f"image {image_id} is not a duplicate; it is already kept")
        old = ws.get(record.duplicate_of)
        members = select_images(ws, "duplicate_of = ? AND id != ?", (old.id, image_id))
        ws.set_status(image_id, old.status if old.status != "duplicate" else "pending")
        for other in [old, *members]:
            ws.set_status(other.id, "duplicate", duplicate_of=image_id)
        return ws.get(image_id)


def decide_many(ws: Workspace, view: View, status: str, flag: str | None = None, max_id: int | None = None) -> int:
    """Bulk decision in one transaction and one batch (one undo takes it back): pending → accepted (as `accept` does,
    the images with a blocking flag stay pending), or every image with `flag` → rejected.

    `max_id` bounds it to images that existed when the user confirmed (a scrape may be adding more).
    """
    where, params = "category = ?", [view.category]
    if flag is None:
        where += f" AND status = 'pending' AND NOT {_BLOCKED_SQL}"
    else:
        where += " AND status != ? AND (',' || flags || ',') LIKE ?"
        params += [status, f"%,{flag},%"]
    if max_id is not None:
        where += " AND id <= ?"
        params.append(max_id)
    ids = [r[0] for r in read_rows(ws, f"SELECT id FROM images WHERE {where}", params)]
    with ws.batch():
        for image_id in ids:
            ws.set_status(image_id, status)
    return len(ids)


# -- HTML -------------------------------------------------------------------------------------------------
def file_url(path: Path) -> str:
    # relative, so it works under a proxy root path and through --share
    return "gradio_api/file=" + quote(str(path))


def _status_badge(status: str) -> str:
    return f'<span class="rv-badge rv-{status}">{status}</span>'


def progress_html(ws: Workspace, category: str) -> str:
    counts = progress_counts(ws, category)
    total = sum(counts.values()) or 1
    bar = "".join(f'<span class="rv-{s}" style="width:{100 * n / total:.2f}%"></span>' for s, n in counts.items() if n)
    labels = " · ".join(f'<span data-status="{s}">{s} <b>{n}</b></span>' for s, n in counts.items())
    done = total - counts["pending"] if sum(counts.values()) else 0
    return (f'<div class="rv-progress" data-pending="{counts["pending"]}"><div class="rv-bar">{bar}</div>'
            f'<div>{labels} — {done} of {sum(counts.values())} decided</div></div>')


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
            f'style="width:min(100%, calc(62vh * {w / h:.4f}))">'
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
    scale = 220 / max(x1 - x0, y1 - y0)  # the preview box is at most 220 px
    return (f'<div class="rv-preview" data-crop="{x0},{y0},{x1},{y1}" style="width:{(x1 - x0) * scale:.0f}px;'
            f'height:{(y1 - y0) * scale:.0f}px"><img src="{file_url(path)}" alt="crop preview" style="width:'
            f'{w * scale:.0f}px;height:{h * scale:.0f}px;left:{-x0 * scale:.0f}px;top:{-y0 * scale:.0f}px"></div>')


def feedback_note(record: ImageRecord) -> str | None:
    """For a photo sent back from the demo: "the model said X (NN %), a user said Y"; else None."""
    if record.predicted_label is None or record.given_label is None:
        return None
    share = "" if record.predicted_probability is None else f" ({100 * record.predicted_probability:.0f} %)"
    return f"the model said {record.predicted_label}{share}, a user said {record.given_label}"


def meta_html(ws: Workspace, view: View, record: ImageRecord | None) -> str:
    if record is None:
        return ""
    e = html.escape
    url = record.source_url or ""
    url_html = (f'<a href="{e(url)}" target="_blank" rel="noopener noreferrer">{e(url)}</a>'
                if url.startswith(("http://", "https://")) else e(url) or "—")
    near = nearest_duplicate(ws, record)
    near_text = "not hashed yet (run dedup)" if record.phash is None else (
        "none in this category" if near is None else f"#{near[0]} at {near[1]} bits")
    rows = [("image", f"#{record.id} · {e(Path(record.path).name)}"), ("status", _status_badge(record.status)),
            ("category", e(record.category)), ("source", e(record.source) + (f" · “{e(record.query)}”" if record.query else "")),
            ("source URL", url_html), ("size", f"{record.width}×{record.height} px · {record.bytes / 1024:.0f} KiB · {e(record.format)}"),
            ("flags", e(", ".join(record.flags)) or "none"),
            ("crop", ",".join(map(str, record.crop)) if record.crop else "none"),
            ("nearest near-duplicate", near_text)]
    if record.duplicate_of is not None:
        rows.append(("duplicate of", f"#{record.duplicate_of}"))
    if feedback_note(record):
        rows.append(("demo feedback", e(feedback_note(record))))
    if has_suspicion(ws):  # read by name: the column arrives with curate.suspects
        columns = {r[1] for r in read_rows(ws, "PRAGMA table_info(images)")}
        wanted = [c for c in ("suspicion", "suggested_label", "suspicion_reason") if c in columns]
        values = dict(zip(wanted, read_rows(ws, f"SELECT {', '.join(wanted)} FROM images WHERE id = ?", (record.id,))[0]))
        score = values.get("suspicion")
        text = "not scored" if score is None else f"{score:.2f}"
        if values.get("suggested_label"):
            text += f" · suggests {e(values['suggested_label'])}"
        if values.get("suspicion_reason"):
            text += f" · {e(values['suspicion_reason'])}"
        rows.append(("suspicion", text))
    key = order_key(ws, view, record.id)
    where, params = view.where()
    position = read_rows(ws, f"SELECT COUNT(*) FROM images WHERE {where} AND ({_key_sql(ws, view.sort)}) <= (?, ?, ?)",
                         [*params, *key])[0][0]
    total = count_in(ws, view)
    body = "".join(f'<tr><th>{k}</th><td data-field="{k}">{v}</td></tr>' for k, v in rows)
    return (f'<div class="rv-meta" data-id="{record.id}"><div class="rv-position">{position} of {total} in this view'
            f'</div><table>{body}</table></div>')


def grid_html(ws: Workspace, records: list[ImageRecord], current: int | None) -> str:
    if not records:
        return '<div class="rv-empty">No images on this page.</div>'
    cells = []
    for record in records:
        thumb = cached_copy(ws, record, GRID_PX)
        img = f'<img src="{file_url(thumb)}" alt="" loading="lazy">' if thumb else '<div class="rv-broken">?</div>'
        flags = f'<span class="rv-flags" title="{html.escape(", ".join(record.flags))}">⚑{len(record.flags)}</span>' if record.flags else ""
        cells.append(f'<button class="rv-cell rv-{record.status}{" rv-current" if record.id == current else ""}" '
                     f'data-id="{record.id}" title="#{record.id} {record.status}">{img}'
                     f'<span class="rv-cell-label">#{record.id} {record.status}</span>{flags}</button>')
    return f'<div class="rv-grid">{"".join(cells)}</div>'


def duplicates_html(ws: Workspace, category: str, page: int) -> str:
    groups = duplicate_groups(ws, category)
    if not groups:
        return '<div class="rv-empty">No near-duplicate groups in this category (run `python -m curate dedup`).</div>'
    shown = groups[page * GROUPS_PER_PAGE:(page + 1) * GROUPS_PER_PAGE]
    out = [f'<div class="rv-dup-count">{len(groups)} groups; showing {page * GROUPS_PER_PAGE + 1}–'
           f'{page * GROUPS_PER_PAGE + len(shown)}</div>']
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
    return f'<div class="rv-message{" rv-error" if error else ""}">{html.escape(text)}</div>'


# -- the app ------------------------------------------------------------------------------------------------
CSS = """
.rv-stage { position: relative; overflow: hidden; margin: 0 auto; line-height: 0; cursor: crosshair; user-select: none; }
.rv-stage img { display: block; width: 100%; height: auto; }
.rv-stage.rv-accepted { outline: 4px solid #16a34a; } .rv-stage.rv-rejected { outline: 4px solid #dc2626; }
.rv-stage.rv-duplicate { outline: 4px solid #9333ea; }
.rv-crop { position: absolute; border: 2px solid #facc15; box-shadow: 0 0 0 9999px rgba(0,0,0,.45); pointer-events: none; }
.rv-draw { position: absolute; display: none; border: 2px dashed #38bdf8; pointer-events: none; }
.rv-prefetch { display: none; }
.rv-preview { position: relative; overflow: hidden; border: 1px solid #888; }
.rv-preview img { position: absolute; max-width: none; }
.rv-bar { display: flex; height: 10px; border-radius: 5px; overflow: hidden; background: #e5e7eb; margin-bottom: 4px; }
.rv-bar .rv-accepted, .rv-badge.rv-accepted { background: #16a34a; } .rv-bar .rv-rejected, .rv-badge.rv-rejected { background: #dc2626; }
.rv-bar .rv-duplicate, .rv-badge.rv-duplicate { background: #9333ea; } .rv-bar .rv-pending, .rv-badge.rv-pending { background: #9ca3af; }
.rv-badge { color: white; padding: 1px 8px; border-radius: 8px; }
.rv-meta table { font-size: 0.9em; } .rv-meta th { text-align: left; padding-right: 10px; white-space: nowrap; }
.rv-meta td { word-break: break-all; }
.rv-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 6px; }
.rv-cell { position: relative; padding: 0; border: 3px solid #9ca3af; background: none; cursor: pointer; line-height: 0; }
.rv-cell img { width: 100%; height: 120px; object-fit: cover; }
.rv-cell.rv-accepted { border-color: #16a34a; } .rv-cell.rv-rejected { border-color: #dc2626; opacity: .6; }
.rv-cell.rv-duplicate { border-color: #9333ea; opacity: .7; } .rv-cell.rv-current { box-shadow: 0 0 0 3px #2563eb; }
.rv-cell-label { position: absolute; left: 0; bottom: 0; background: rgba(0,0,0,.6); color: white; font-size: 11px; line-height: 1.4; padding: 0 4px; }
.rv-flags { position: absolute; right: 0; top: 0; background: #f59e0b; color: black; font-size: 11px; line-height: 1.4; padding: 0 4px; }
.rv-group { display: flex; gap: 10px; padding: 8px 0; border-bottom: 1px solid #ddd; overflow-x: auto; }
.rv-dup { border: 3px solid transparent; padding: 4px; text-align: center; font-size: 12px; }
.rv-dup img { max-height: 200px; } .rv-dup.rv-kept { border-color: #16a34a; }
.rv-kept-mark { color: #16a34a; font-weight: bold; }
.rv-keep { border: 1px solid #888; border-radius: 6px; padding: 2px 8px; cursor: pointer; }
.rv-message { min-height: 1.5em; font-weight: 600; } .rv-message.rv-error { color: #dc2626; }
.rv-keys kbd { border: 1px solid #aaa; border-radius: 4px; padding: 0 5px; font-size: 0.85em; }
"""

# Keyboard shortcuts: one document-level listener that clicks the matching button, so a key does exactly what a
# click does (same handler, same confirmation). Keys typed into a text field are left alone.
HEAD = """
<script>
document.addEventListener('keydown', (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const target = event.target;
  if (target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.isContentEditable)) return;
  const buttons = {a: 'rv-accept', r: 'rv-reject', u: 'rv-undo', j: 'rv-next', ArrowRight: 'rv-next',
                   k: 'rv-prev', ArrowLeft: 'rv-prev', x: 'rv-crop-reset', n: 'rv-page-next', p: 'rv-page-prev',
                   s: 'rv-suggest'};
  if (event.key === 'l') {
    const box = document.querySelector('#rv-relabel input');
    if (box) { event.preventDefault(); box.focus(); }
    return;
  }
  const id = buttons[event.key];
  if (!id) return;
  const button = document.getElementById(id);
  if (button) { event.preventDefault(); button.click(); }
});
</script>
"""

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

GRID_JS = """
element.addEventListener('click', (event) => {
  const cell = event.target.closest('[data-id]');
  if (cell) trigger('click', {image_id: Number(cell.dataset.id)});
});
"""

DUPLICATES_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('[data-keep]');
  if (button) trigger('click', {keep: Number(button.dataset.keep)});
});
"""


def build_app(workspace_dir: str | Path, page_size: int = PAGE_SIZE) -> gr.Blocks:
    """The review app over `workspace_dir`. Every handler reads the manifest afresh and writes before it answers.

    Launch it with `launch()` (which sets the file-serving limits, CSS and keyboard shortcuts).
    """
    ws = Workspace(workspace_dir, create=False)
    sort_labels = list(SORTS)

    def categories() -> list[str]:
        return list(ws.categories())

    def view_of(category, status, flag, sort) -> View:
        return View(category or "", status or "all", flag or "any", SORTS.get(sort, "id"))

    def suggestion(record: ImageRecord | None) -> str | None:
        """The label `curate suspects` suggests for `record`, if it differs from the current one."""
        if record is None or not record.suggested_label or record.suggested_label == record.category:
            return None
        return record.suggested_label

    def render(view: View, record: ImageRecord | None, page: int, message: str, error: bool = False):
        """Every output of the main view, in OUTPUTS order."""
        names = categories()
        total = count_in(ws, view)
        pages = max(1, -(-total // page_size))
        page = min(max(0, page), pages - 1)
        prefetch = None
        if record is not None:
            following = step(ws, view, order_key(ws, view, record.id), pending_only=True)
            if following is not None:
                prefetch = view_file(ws, following, make=False)
                if prefetch is None:  # make its display copy now, off the request path
                    threading.Thread(target=view_file, args=(ws, following), daemon=True).start()
        return (
            gr.Dropdown(choices=names, value=view.category or None),
            progress_html(ws, view.category) if view.category else "",
            image_html(ws, record, prefetch),
            meta_html(ws, view, record),
            crop_preview_html(ws, record),
            grid_html(ws, page_of(ws, view, page, page_size), record.id if record else None),
            f"page {page + 1} of {pages} · {total} images",
            record.id if record else None,
            page,
            message_html(message, error),
            ",".join(map(str, record.crop)) if record is not None and record.crop else "",
            gr.Dropdown(choices=names, value=None),
            gr.Button(value=f"Use suggestion (s): {suggestion(record) or 'none'}"),  # the button names the label
        )

    def run(fn, category, status, flag, sort, image_id, page, *args):
        """Call a handler; a CurateError becomes a message on the page (the action did not happen)."""
        view = view_of(category, status, flag, sort)
        try:
            return fn(view, image_id, page, *args)
        except CurateError as err:
            return render(view, _get(image_id), page, str(err), error=True)

    def _get(image_id) -> ImageRecord | None:
        if image_id is None:
            return None
        try:
            return ws.get(int(image_id))
        except CurateError:
            return None

    def first(view: View) -> ImageRecord | None:
        return step(ws, view, None, pending_only=True) or step(ws, view, None)

    def on_load():
        names = categories()
        with_pending = {r[0] for r in read_rows(ws, "SELECT DISTINCT category FROM images WHERE status = 'pending'")}
        category = next((n for n in names if n in with_pending), names[0] if names else "")
        view = View(category)
        return render(view, first(view) if category else None, 0, "")

    def show_first(view, image_id, page):
        return render(view, first(view), 0, "")

    def decide(view, image_id, page, status):
        record = _get(image_id)
        if record is None:
            return render(view, first(view), page, "no image selected", error=True)
        key = order_key(ws, view, record.id)
        ws.set_status(record.id, status)  # committed before the page hears about it
        return render(view, next_after_decision(ws, view, key), page, f"#{record.id} {status}")

    def relabel(view, image_id, page, category):
        record = _get(image_id)
        category = (category or "").strip()
        if record is None or not category:
            return render(view, record, page, "pick or type a category to relabel to", error=True)
        key = order_key(ws, view, record.id)
        ws.relabel(record.id, category)
        following = next_after_decision(ws, view, key) if category != view.category else ws.get(record.id)
        return render(view, following, page, f"#{record.id} relabelled to {category}")

    def use_suggestion(view, image_id, page):
        record = _get(image_id)
        if suggestion(record) is None:
            return render(view, record, page, "no suggested label for this image (`curate suspects` ranks and suggests)",
                          error=True)
        return relabel(view, image_id, page, suggestion(record))

    def undo(view, image_id, page):
        restored = ws.undo()
        if not restored:
            return render(view, _get(image_id), page, "nothing to undo")
        record = restored[0]
        if record.category != view.category:
            view = View(record.category, view.status, view.flag, view.sort)
        if len(restored) > 1:  # a bulk action: stay on the image shown, now restored with the others
            shown = _get(image_id) if image_id in {r.id for r in restored} else record
            return render(view, shown, page, f"undone: bulk action on {len(restored)} images")
        crop = f", crop {','.join(map(str, record.crop))}" if record.crop else ""
        return render(view, record, page, f"undone: #{record.id} is {record.status} in {record.category}{crop}")

    def move(view, image_id, page, forward):
        record = _get(image_id)
        key = order_key(ws, view, record.id) if record else None
        following = step(ws, view, key, forward) or record
        edge = "" if following is not record else ("last image in this view" if forward else "first image in this view")
        return render(view, following, page, edge)

    def open_image(view, image_id, page, clicked_id):
        return render(view, _get(clicked_id), page, "")

    def turn_page(view, image_id, page, delta):
        return render(view, _get(image_id), page + delta, "")

    def save_crop(view, record: ImageRecord | None, box, page):
        if record is None:
            return render(view, None, page, "no image selected", error=True)
        record = ws.set_crop(record.id, box)
        return render(view, record, page, f"#{record.id} crop " + (",".join(map(str, record.crop)) if record.crop else "reset"))

    def crop_drawn(view, image_id, page, drawn_id, fractions):
        record = _get(drawn_id)
        if record is None:
            return render(view, None, page, "no image selected", error=True)
        w, h = upright_size(ws, record)
        fx0, fy0, fx1, fy1 = (float(v) for v in fractions)
        return save_crop(view, record, (fx0 * w, fy0 * h, fx1 * w, fy1 * h), page)

    def crop_typed(view, image_id, page, text):
        return save_crop(view, _get(image_id), parse_crop(text), page)

    def crop_reset(view, image_id, page):
        return save_crop(view, _get(image_id), None, page)

    # bulk actions: the first click asks; Confirm acts on what was counted then (a scrape may be adding more)
    def ask_bulk(category, action, flag):
        hidden = (gr.Column(visible=False), "", None)
        if not category:
            return hidden
        if action == "accept":
            held = read_rows(ws, f"SELECT COUNT(*) FROM images WHERE category = ? AND status = 'pending' AND {_BLOCKED_SQL}",
                             [category])[0][0]
            where, params = f"category = ? AND status = 'pending' AND NOT {_BLOCKED_SQL}", [category]
            what = "Accept all {n} pending images" + (f" ({held} with a blocking flag stay pending)" if held else "")
        else:
            if not flag:
                return gr.Column(visible=True), message_html("pick a flag first", True), None
            where = "category = ? AND status != 'rejected' AND (',' || flags || ',') LIKE ?"
            params, what = [category, f"%,{flag},%"], f"Reject all {{n}} images flagged {flag}"
        n, max_id = read_rows(ws, f"SELECT COUNT(*), MAX(id) FROM images WHERE {where}", params)[0]
        text = html.escape(what.format(n=n) + f" in {category}?")
        return gr.Column(visible=True), f'<div class="rv-confirm-text" data-n="{n}">{text}</div>', {
            "category": category, "action": action, "flag": flag, "max_id": max_id}

    def do_bulk(view, image_id, page, pending):
        if not pending:
            return render(view, _get(image_id), page, "nothing to confirm")
        target = View(pending["category"], view.status, view.flag, view.sort)
        if pending["action"] == "accept":
            n = decide_many(ws, target, "accepted", max_id=pending["max_id"])
            text = f"accepted {n} pending images"
        else:
            n = decide_many(ws, target, "rejected", flag=pending["flag"], max_id=pending["max_id"])
            text = f"rejected {n} images flagged {pending['flag']}"
        return render(target, first(target), 0, text)

    def score(category, status, flag, sort, image_id, page):
        """`curate suspects` from the page: score every pending/accepted image (new ones embedded), order by it."""
        from curate.suspects import find_suspects

        view = view_of(category, status, flag, "most suspicious first")
        try:
            report = find_suspects(ws)
        except CurateError as err:
            return (*render(view_of(category, status, flag, sort), _get(image_id), page, str(err), error=True),
                    gr.Dropdown())
        agree = "" if report.probe_accuracy is None else f"; the probe agrees with {report.probe_accuracy:.0%} of labels"
        held = sum(s.held for s in report.suspects)
        off_topic = f"; {held} held back by a blocking flag come last (quality flag filter: off_topic, ...)" if held else ""
        text = f"ranked {len(report.suspects)} images ({report.embedded} newly embedded){agree}: most suspicious first{off_topic}"
        return (*render(view, first(view), 0, text),
                gr.Dropdown(choices=sort_labels, value="most suspicious first"))

    def switch_kept(category, dup_page, keep_id):
        try:
            record = keep_instead(ws, int(keep_id))
            text, error = f"#{record.id} is now the kept image", False
        except CurateError as err:
            text, error = str(err), True
        return duplicates_html(ws, category, dup_page), message_html(text, error)

    with gr.Blocks(title="curate review") as app:
        image_id = gr.State(None)
        page = gr.State(0)
        pending_bulk = gr.State(None)
        dup_page = gr.State(0)
        with gr.Row():
            category = gr.Dropdown(label="Category", choices=categories(), elem_id="rv-category", scale=2)
            status = gr.Dropdown(label="Status", choices=list(STATUS_FILTERS), value="all", elem_id="rv-status")
            flag = gr.Dropdown(label="Quality flag", choices=list(FLAG_FILTERS), value="any", elem_id="rv-flag")
            sort = gr.Dropdown(label="Order (pending first)", choices=[s for s in sort_labels if SORTS[s] != "suspicion"
                               or has_suspicion(ws)], value=sort_labels[0], elem_id="rv-sort")
            score_btn = gr.Button("Rank suspects", elem_id="rv-score", size="sm", scale=0)
        progress = gr.HTML(elem_id="rv-progress")
        with gr.Tabs():
            with gr.Tab("Review", id="review"):
                with gr.Row():
                    with gr.Column(scale=3):
                        view_html = gr.HTML(elem_id="rv-view", js_on_load=CROP_JS)
                    with gr.Column(scale=2):
                        message = gr.HTML(elem_id="rv-message")
                        with gr.Row():
                            accept_btn = gr.Button("Accept (a)", variant="primary", elem_id="rv-accept")
                            reject_btn = gr.Button("Reject (r)", variant="stop", elem_id="rv-reject")
                            undo_btn = gr.Button("Undo (u)", elem_id="rv-undo")
                        with gr.Row():
                            prev_btn = gr.Button("← Previous (k)", elem_id="rv-prev")
                            next_btn = gr.Button("Next (j) →", elem_id="rv-next")
                        with gr.Row():
                            relabel_to = gr.Dropdown(label="Relabel to (existing or new category)", choices=categories(),
                                                     allow_custom_value=True, elem_id="rv-relabel", scale=3)
                            relabel_btn = gr.Button("Relabel", elem_id="rv-relabel-btn", scale=1)
                            suggest_btn = gr.Button("Use suggestion (s)", elem_id="rv-suggest", scale=1)
                        with gr.Row():
                            crop_box = gr.Textbox(label="Crop x0,y0,x1,y1 (px; or drag on the image)", elem_id="rv-crop-box", scale=3)
                            crop_btn = gr.Button("Save crop", elem_id="rv-crop-save", scale=1)
                            reset_btn = gr.Button("Reset crop (x)", elem_id="rv-crop-reset", scale=1)
                        crop_preview = gr.HTML(elem_id="rv-crop-preview", js_on_load=None)
                        meta = gr.HTML(elem_id="rv-meta", js_on_load=None)
                        gr.HTML('<div class="rv-keys"><b>Keys:</b> ' + " · ".join(
                            f"<kbd>{html.escape(k)}</kbd> {html.escape(v)}" for k, v in SHORTCUTS) + "</div>",
                            elem_id="rv-shortcuts", js_on_load=None)
                with gr.Row():
                    page_prev = gr.Button("◀ Page (p)", elem_id="rv-page-prev", size="sm", scale=0)
                    page_label = gr.Markdown(elem_id="rv-page")
                    page_next = gr.Button("Page (n) ▶", elem_id="rv-page-next", size="sm", scale=0)
                grid = gr.HTML(elem_id="rv-grid", js_on_load=GRID_JS)
                with gr.Accordion("Bulk actions", open=False, elem_id="rv-bulk"):
                    with gr.Row():
                        bulk_accept = gr.Button("Accept all remaining pending…", elem_id="rv-bulk-accept")
                        bulk_flag = gr.Dropdown(label="Flag", choices=list(FLAGS), elem_id="rv-bulk-flag")
                        bulk_reject = gr.Button("Reject all with this flag…", elem_id="rv-bulk-reject")
                    with gr.Column(visible=False) as confirm_box:
                        confirm_text = gr.HTML(elem_id="rv-confirm-text", js_on_load=None)
                        with gr.Row():
                            confirm_btn = gr.Button("Confirm", variant="stop", elem_id="rv-confirm")
                            cancel_btn = gr.Button("Cancel", elem_id="rv-cancel")
            with gr.Tab("Duplicates", id="duplicates") as dup_tab:
                dup_message = gr.HTML(elem_id="rv-dup-message", js_on_load=None)
                dup_html = gr.HTML(elem_id="rv-duplicates", js_on_load=DUPLICATES_JS)

        filters = [category, status, flag, sort, image_id, page]
        outputs = [category, progress, view_html, meta, crop_preview, grid, page_label, image_id, page, message,
                   crop_box, relabel_to, suggest_btn]
        fast = dict(show_progress="hidden", queue=False)

        def on(fn, *extra):
            """A handler over the filter inputs (+ more inputs), with fixed extra arguments after them."""
            return lambda c, s, f, o, i, p, *more: run(fn, c, s, f, o, i, p, *more, *extra)

        def with_event(fn, *names):
            """A handler that also reads fields of the event sent by the page's JS (trigger(name, {...}))."""
            def handler(c, s, f, o, i, p, evt: gr.EventData):
                return run(fn, c, s, f, o, i, p, *(getattr(evt, n) for n in names))
            return handler

        app.load(on_load, None, outputs, **fast)
        for control in (category, status, flag, sort):
            control.input(on(show_first), filters, outputs, **fast)
        accept_btn.click(on(decide, "accepted"), filters, outputs, **fast)
        reject_btn.click(on(decide, "rejected"), filters, outputs, **fast)
        undo_btn.click(on(undo), filters, outputs, **fast)
        prev_btn.click(on(move, False), filters, outputs, **fast)
        next_btn.click(on(move, True), filters, outputs, **fast)
        relabel_btn.click(on(relabel), [*filters, relabel_to], outputs, **fast)
        suggest_btn.click(on(use_suggestion), filters, outputs, **fast)
        score_btn.click(score, filters, [*outputs, sort], show_progress="minimal")  # queued: embedding takes a while
        view_html.edit(with_event(crop_drawn, "image_id", "box"), filters, outputs, **fast)
        crop_btn.click(on(crop_typed), [*filters, crop_box], outputs, **fast)
        crop_box.submit(on(crop_typed), [*filters, crop_box], outputs, **fast)
        reset_btn.click(on(crop_reset), filters, outputs, **fast)
        grid.click(with_event(open_image, "image_id"), filters, outputs, **fast)
        page_prev.click(on(turn_page, -1), filters, outputs, **fast)
        page_next.click(on(turn_page, 1), filters, outputs, **fast)
        confirm_outputs = [confirm_box, confirm_text, pending_bulk]
        bulk_accept.click(lambda c: ask_bulk(c, "accept", None), category, confirm_outputs, **fast)
        bulk_reject.click(lambda c, f: ask_bulk(c, "reject", f), [category, bulk_flag], confirm_outputs, **fast)
        confirm_btn.click(on(do_bulk), [*filters, pending_bulk], outputs, **fast).then(
            lambda: (gr.Column(visible=False), "", None), None, confirm_outputs, **fast)
        cancel_btn.click(lambda: (gr.Column(visible=False), "", None), None, confirm_outputs, **fast)
        dup_tab.select(lambda c, p: duplicates_html(ws, c, p), [category, dup_page], dup_html, **fast)
        category.input(lambda c, p: duplicates_html(ws, c, p), [category, dup_page], dup_html, **fast)

        def on_keep(c, p, evt: gr.EventData):
            return switch_kept(c, p, evt.keep)

        dup_html.click(on_keep, [category, dup_page], [dup_html, dup_message], **fast)
    app.curate_workspace = ws  # closed by launch() when the server stops
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
    return dict(allowed_paths=[str(root / IMAGES_DIR), str(root / THUMBNAILS_DIR)], blocked_paths=blocked, css=CSS,
                head=HEAD, max_file_size=MAX_REQUEST_BYTES, app_kwargs={"middleware": middleware})


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
        raise CurateError(f"cannot serve on {host}:{port}: {why_unservable(host, port) or err}") from None
    if block:
        app.curate_workspace.close()
    return app
