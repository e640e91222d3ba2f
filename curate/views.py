"""The review UI's queries: what one browser tab looks at (a View), in which order and page by page, and the images a
bulk action decides. Plain functions over the manifest; curate/review.py renders what they return."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from curate.dedup import hamming
from curate.quality import HELD_SQL
from curate.workspace import STATUSES, ImageRecord, Workspace, flags_sql, read_rows, select_images

PAGE_SIZE = 40
SORTS = ("id", "flags", "suspicion")
# Sort keys, ascending. Every ordering puts pending images first and ends with the id, so it is total.
_SORT_KEYS = {
    "id": "abs(0)",  # a constant (a bare 0 would mean "column 0" to ORDER BY)
    "flags": "-(length(flags) - length(replace(flags, ',', '')) + (flags != ''))",
    # highest first, the pending images a blocking flag holds back after the others (curate.suspects' order), unscored last
    "suspicion": f"COALESCE(-suspicion + 2 * {HELD_SQL}, 1e308)",
}


def _order_terms(sort: str) -> list[str]:
    return ["(status != 'pending')", _SORT_KEYS.get(sort, _SORT_KEYS["id"]), "id"]


@dataclass(frozen=True)
class View:
    """What one browser tab is looking at: a category (None: every category) and its filters."""

    category: str | None = None
    status: str = "all"
    flag: str = "any"  # "any", "flagged", "unflagged" or one flag
    sort: str = "id"

    def where(self) -> tuple[str, list]:
        clauses, params = [], []
        if self.category is not None:
            clauses.append("category = ?")
            params.append(self.category)
        if self.status != "all":
            clauses.append("status = ?")
            params.append(self.status)
        if self.flag == "flagged":
            clauses.append("flags != ''")
        elif self.flag == "unflagged":
            clauses.append("flags = ''")
        elif self.flag != "any":
            clauses.append(flags_sql([self.flag]))
        return " AND ".join(clauses) or "1", params

    @property
    def order(self) -> str:
        return ", ".join(_order_terms(self.sort))


def page_of(ws: Workspace, view: View, page: int, page_size: int = PAGE_SIZE) -> list[ImageRecord]:
    where, params = view.where()
    return select_images(ws, where, params, view.order, limit=page_size, offset=page * page_size)


def count_in(ws: Workspace, view: View) -> int:
    where, params = view.where()
    return read_rows(ws, f"SELECT COUNT(*) FROM images WHERE {where}", params)[0][0]


def order_key(ws: Workspace, view: View, image_id: int) -> tuple | None:
    """Where an image sits in the view's ordering (a row value to compare with)."""
    rows = read_rows(ws, f"SELECT {view.order} FROM images WHERE id = ?", (image_id,))
    return tuple(rows[0]) if rows else None


def position_of(ws: Workspace, view: View, image_id: int) -> int:
    """1 for the first image of the view, ...; 0 when the image is not in the view."""
    key = order_key(ws, view, image_id)
    if key is None:
        return 0
    where, params = view.where()
    return read_rows(ws, f"SELECT COUNT(*) FROM images WHERE {where} AND ({view.order}) <= (?, ?, ?)",
                     [*params, *key])[0][0]


def step(ws: Workspace, view: View, key: tuple | None, forward: bool = True,
         pending_only: bool = False) -> ImageRecord | None:
    """The image after (or before) `key` in the view's ordering; None at the end."""
    where, params = view.where()
    terms = _order_terms(view.sort)
    if pending_only:
        where += " AND status = 'pending'"
    if key is not None:
        where += f" AND ({', '.join(terms)}) {'>' if forward else '<'} (?, ?, ?)"
        params = [*params, *key]
    order = ", ".join(terms if forward else (f"{term} DESC" for term in terms))
    found = select_images(ws, where, params, order, limit=1)
    return found[0] if found else None


def first_of(ws: Workspace, view: View) -> ImageRecord | None:
    """The view's first pending image, else its first image."""
    return step(ws, view, None, pending_only=True) or step(ws, view, None)


def next_after_decision(ws: Workspace, view: View, key: tuple | None) -> ImageRecord | None:
    """After deciding the image at `key`: the next pending image of the view (wrapping), else the next image."""
    return (step(ws, view, key, pending_only=True) or step(ws, view, None, pending_only=True)
            or step(ws, view, key) or step(ws, view, None))


def first_category_with_pending(ws: Workspace) -> str | None:
    """The first category (in the order they were added) that has pending images, else the first one."""
    names = list(ws.categories())
    with_pending = {r[0] for r in read_rows(ws, "SELECT DISTINCT category FROM images WHERE status = 'pending'")}
    return next((n for n in names if n in with_pending), names[0] if names else None)


def progress_counts(ws: Workspace, category: str | None) -> dict[str, int]:
    """Images by status in a category (None: the whole workspace)."""
    where, params = View(category).where()
    counts = {s: 0 for s in STATUSES}
    for status, n in read_rows(ws, f"SELECT status, COUNT(*) FROM images WHERE {where} GROUP BY status", params):
        counts[status] = n
    return counts


def nearest_duplicate(ws: Workspace, record: ImageRecord) -> tuple[int, int] | None:
    """(image id, Hamming distance in bits) of the nearest other phash in the image's category, or None."""
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


def duplicate_groups(ws: Workspace, category: str | None) -> list[tuple[ImageRecord, list[ImageRecord]]]:
    """Near-duplicate groups of a category (None: all): (kept image, its duplicates), biggest groups first."""
    where, params = View(category).where()
    dups = select_images(ws, f"{where} AND status = 'duplicate' AND duplicate_of IS NOT NULL", params, "duplicate_of, id")
    by_kept: dict[int, list[ImageRecord]] = {}
    for record in dups:
        by_kept.setdefault(record.duplicate_of, []).append(record)
    groups = [(ws.get(kept), members) for kept, members in by_kept.items()]
    return sorted(groups, key=lambda g: (-len(g[1]), g[0].id))


def unhashed_count(ws: Workspace, category: str | None) -> int:
    """Images of a category (None: all) that have no perceptual hash yet: `dedup` has not looked at them."""
    where, params = View(category).where()
    return read_rows(ws, f"SELECT COUNT(*) FROM images WHERE {where} AND phash IS NULL", params)[0][0]


@dataclass(frozen=True)
class Bulk:
    """One bulk decision over a category (None: every category): "accept" takes the pending images `accept` would take
    (no blocking flag), "reject" every image with `flag`. `max_id` bounds it to the images there were when the user was
    asked (a scrape may be adding more)."""

    action: str  # "accept" or "reject"
    category: str | None
    flag: str | None = None
    max_id: int | None = None

    @property
    def status(self) -> str:
        return "accepted" if self.action == "accept" else "rejected"

    def where(self) -> tuple[str, list]:
        """The one selection both the question's count and the decision use."""
        where, params = View(self.category).where()
        if self.action == "accept":
            where += f" AND status = 'pending' AND NOT {HELD_SQL}"
        else:
            where += f" AND status != 'rejected' AND {flags_sql([self.flag])}"
        if self.max_id is not None:
            where += " AND id <= ?"
            params.append(self.max_id)
        return where, params


def plan(ws: Workspace, bulk: Bulk) -> tuple[Bulk, int, int]:
    """(the bulk action bounded to the images there are now, how many it decides, how many a blocking flag spares)."""
    where, params = bulk.where()
    n, max_id = read_rows(ws, f"SELECT COUNT(*), MAX(id) FROM images WHERE {where}", params)[0]
    held = 0
    if bulk.action == "accept":
        scope, scope_params = View(bulk.category).where()
        held = read_rows(ws, f"SELECT COUNT(*) FROM images WHERE {scope} AND {HELD_SQL}", scope_params)[0][0]
    return replace(bulk, max_id=max_id or 0), n, held


def decide_many(ws: Workspace, bulk: Bulk) -> int:
    """Decide the images `bulk` selects, in one transaction and one batch (one undo takes it back); returns how many."""
    where, params = bulk.where()
    with ws.batch():
        ids = [r[0] for r in read_rows(ws, f"SELECT id FROM images WHERE {where}", params)]
        for image_id in ids:
            ws.set_status(image_id, bulk.status)
    return len(ids)
