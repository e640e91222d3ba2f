"""Command line of curate: `python -m curate [--workspace DIR] COMMAND ...` (a thin shell over the library)."""
from __future__ import annotations

import argparse
import errno
import json
import re
import sqlite3
import sys
from collections import Counter

from classify.options import PORT, Parser, number
from curate import CurateError


def _table(headers: list[str], rows: list[list]) -> str:
    """Plain-text table: numeric columns right-aligned, text columns (and the first) left-aligned."""
    cells = [headers] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [i > 0 and all(re.fullmatch(r"[-+]?[\d.,/%]+|-", r[i]) for r in cells[1:]) for i in range(len(headers))]
    lines = ["  ".join(v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _reasons(rejected: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "-"


IMPORT_COPIES_SHOWN = 20  # duplicates listed by name after an import; the rest are counted


def cmd_import(args, ws) -> int:
    from curate.importer import import_images

    rename = {}
    for pair in args.rename or []:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise CurateError(f"--rename wants OLD=NEW, got {pair!r}")
        rename[old] = new
    report = import_images(ws, args.source, category=args.category, rename=rename, min_size_px=args.min_size, progress=True)
    rows = [[cat, c.added, c.already_present, c.duplicate, _reasons(c.rejected)]
            for cat, c in report.categories.items()]
    if report.skipped:  # files that are no images to import: counted too, never dropped unseen
        rows.append(["(no category: skipped)", 0, 0, 0, _reasons(report.skipped)])
    print(_table(["category", "added", "already present", "duplicate", "rejected"], rows))
    if report.copies:  # not added, so nowhere else to see them: say which stored image each one repeats
        n = len(report.copies)
        print(f"{n} file{'' if n == 1 else 's'} not added: the same bytes are already in the workspace")
        for origin, record in report.copies[:IMPORT_COPIES_SHOWN]:
            print(f"  {origin}  = #{record.id} in {record.category} ({record.source_url or record.path})")
        if len(report.copies) > IMPORT_COPIES_SHOWN:
            print(f"  ... and {len(report.copies) - IMPORT_COPIES_SHOWN} more")
    return 0


def cmd_stats(args, ws) -> int:
    stats = ws.stats()
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
        return 0
    from curate.workspace import STATUSES

    rows = [[cat, s["total"], *(s["status"][k] for k in STATUSES), ", ".join(f"{f} {n}" for f, n in sorted(s["flags"].items())) or "-"]
            for cat, s in stats.items()]
    print(_table(["category", "total", *STATUSES, "flags"], rows))
    return 0


def scrape_categories(args) -> list[str]:
    """The categories to scrape: those named (arguments, --categories-file) or, with --other-dishes, common dishes
    not on --menu (curate.dishes). Read before the workspace is opened, so that a mistake makes no workspace."""
    from curate.scrape import read_categories

    if not args.other_dishes:
        if args.menu:
            raise CurateError("--menu goes with --other-dishes")
        return read_categories(args.categories, args.categories_file)
    from curate.dishes import dishes_for

    if args.categories or args.categories_file:
        raise CurateError("give CATEGORY arguments or --other-dishes, not both")
    if not args.menu:
        raise CurateError("--other-dishes needs --menu (the menu's workspace or a file of its categories), so that "
                          "none of your dishes is scraped as one that is not on the menu")
    categories, left_out = dishes_for(args.workspace, args.menu, args.other_dishes)
    print(f"other dishes: {', '.join(categories)}" + (
        f" (left out as on the menu or close to it: {', '.join(left_out)})" if left_out else ""), flush=True)
    return categories


def cmd_scrape(args, ws) -> int:
    from curate.scrape import ScrapeConfig, scrape

    categories = args.chosen_categories  # main() read them before opening the workspace
    config = ScrapeConfig(engine=args.engine, per_class=args.per_class, query=args.query, min_size_px=args.min_size,
                          threads=args.threads, urls_file=args.urls, timeout_s=args.timeout,
                          search_url=args.search_url)
    report = scrape(ws, categories, config, progress=True)
    rows = [[c.category, c.downloaded, c.already_present, c.total, _reasons(c.rejected), c.message or "ok"]
            for c in report.categories]
    print(_table(["category", "downloaded", "already present", f"total/{config.per_class}", "rejected", "note"], rows))
    short = [c.category for c in report.categories if c.total < config.per_class]
    if short:
        print(f"curate: {len(short)} categor{'y' if len(short) == 1 else 'ies'} ended short of {config.per_class}: "
              f"{', '.join(short)}", file=sys.stderr)
        return 1
    return 0


def cmd_dedup(args, ws) -> int:
    from curate.dedup import dedup

    report = dedup(ws, method=args.hash, threshold_bits=args.threshold, scope=args.scope, dry_run=args.dry_run,
                   workers=args.workers, progress=True, by=args.method, similarity=args.similarity, model=args.model)
    rows = [[cat, n_groups, n_marked] for cat, (n_groups, n_marked) in report.by_category.items()]
    print(_table(["category", "groups", "marked duplicate" + (" (dry run)" if args.dry_run else "")], rows))
    computed = {"hash": f"{report.hashed} hashes", "embedding": f"{report.embedded} embeddings",
                "both": f"{report.hashed} hashes and {report.embedded} embeddings"}[report.by]
    print(f"{computed} computed, {len(report.groups)} groups, {report.marked} images marked duplicate"
          + (" (dry run: nothing changed)" if args.dry_run else ""))
    return 0


def cmd_check(args, ws) -> int:
    from curate.quality import check

    counts = check(ws, progress=True)
    print(_table(["flag", "images"], [[f, n] for f, n in counts.items()]))
    return 0


def cmd_export(args, ws) -> int:
    from curate.export import ExportConfig, export

    config = ExportConfig(split=tuple(args.split), seed=args.seed, balance=args.balance,
                          include_pending=args.include_pending, min_per_class=args.min_per_class,
                          exclude_flags=tuple(args.exclude_flag or ()), threshold_bits=args.threshold_bits,
                          overwrite=args.overwrite)
    report = export(ws, args.out, config, progress=True)
    rows = [[cat, *(counts.get(s, 0) for s in ("train", "valid", "test")), counts.get("augmented", 0)]
            for cat, counts in report.counts.items()]
    print(_table(["category", "train", "valid", "test", "augmented"], rows))
    print(f"wrote {report.files} files to {report.out}; {report.groups_kept} near-duplicate groups kept inside one split")
    return 0


def cmd_review(args, ws) -> int:
    from curate.review import launch

    auth = None
    if args.auth is not None:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise CurateError(f"--auth wants USER:PASS, got {args.auth!r}")
        auth = (user, password)
    launch(ws.root, host=args.host, port=args.port, share=args.share, auth=auth, open_browser=not args.no_browser)
    return 0


def cmd_accept(args, ws) -> int:
    from curate.quality import BLOCKING_FLAGS, accept_passing

    blocking = () if args.all_flags_ok else tuple(args.exclude_flag) if args.exclude_flag else BLOCKING_FLAGS
    report = accept_passing(ws, category=args.category, exclude_flags=blocking)
    names = sorted(set(report.accepted) | set(report.held), key=list(ws.categories()).index)
    rows = [[cat, report.accepted.get(cat, 0), ", ".join(f"{f} {n}" for f, n in sorted(report.held.get(cat, {}).items())) or "-"]
            for cat in names]
    if rows:
        print(_table(["category", "accepted", "left pending (flag)"], rows))
    held = sum(sum(h.values()) for h in report.held.values())
    print(f"accepted {sum(report.accepted.values())} pending images; blocking flags: {', '.join(blocking) or 'none'}"
          + (f"; {held} left pending for review" if held else ""))
    return 0


def cmd_undo(args, ws) -> int:
    restored = ws.undo()
    if not restored:
        print("nothing to undo")
        return 0
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(Counter(r.status for r in restored).items()))
    what = f"#{restored[0].id}" if len(restored) == 1 else f"a bulk action on {len(restored)} images"
    print(f"undone: {what}; now {statuses}")
    return 0


def cmd_suspects(args, ws) -> int:
    from curate.suspects import SuspectsConfig, find_suspects

    if args.top is not None and args.top < 1:
        raise CurateError(f"--top must be at least 1, got {args.top}")
    report = find_suspects(ws, SuspectsConfig(model=args.model), progress=not args.json)
    shown = report.suspects[:args.top] if args.top else report.suspects
    if args.json:
        from dataclasses import asdict

        print(json.dumps([{"rank": k, **asdict(s)} for k, s in enumerate(shown, 1)], indent=2, ensure_ascii=False))
        return 0
    rows = [[k, f"{s.score:.3f}", s.category, s.suggested_label or "-", s.reason + (" [held]" if s.held else ""), s.origin]
            for k, s in enumerate(shown, 1)]
    if rows:
        print(_table(["rank", "score", "category", "suggested", "reason", "origin"], rows))
    agreement = "" if report.probe_accuracy is None else f"; probe agrees with {report.probe_accuracy:.1%} of labels"
    print(f"{len(report.suspects)} images scored ({report.embedded} embedded, {report.cached} from cache){agreement}")
    held = [s for s in report.suspects if s.held]
    if held:
        off_topic = len(ws.list_images(status="pending", flag="off_topic"))
        print(f"{len(held)} held back, ranked last (pending with a blocking flag; {off_topic} off-topic): `accept` leaves "
              "them out; review them with the review UI's flag filter")
    return 0


# One function per command below, each adding its parser and options; every default is the library's own.
MIN_SIZE = number(int, 1, 10_000)  # --min-size of import and scrape: a shorter side in px


def _add_import(sub) -> None:
    from curate.images import MIN_SIZE_PX

    p = sub.add_parser("import", help="copy images in from an ImageFolder tree, a .zip, a flat folder or hf:NAME[:split]")
    p.add_argument("source")
    p.add_argument("--category", help="put every image in this category (needed for a flat folder)")
    p.add_argument("--rename", action="append", metavar="OLD=NEW", help="rename a source class (repeatable)")
    p.add_argument("--min-size", type=MIN_SIZE, default=MIN_SIZE_PX, help="refuse images whose shorter side is below "
                   f"this (px, default {MIN_SIZE_PX})")
    p.set_defaults(func=cmd_import)


def _engine(name: str) -> str:
    from curate.scrape import check_engine

    try:
        return check_engine(name)
    except CurateError as error:  # refused before the workspace is opened, as a usage error
        raise argparse.ArgumentTypeError(str(error)) from None


def _query(text: str) -> str:
    from curate.scrape import check_query

    try:
        return check_query(text)
    except CurateError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_scrape(sub) -> None:
    from curate.scrape import DOWNLOAD_DEADLINE_TIMEOUTS, ENGINES, ScrapeConfig

    d = ScrapeConfig()
    p = sub.add_parser("scrape", help="download images per category through icrawler")
    p.add_argument("categories", nargs="*", metavar="CATEGORY")
    p.add_argument("--categories-file", help="one category per line")
    p.add_argument("--other-dishes", type=number(int, 1, 1000), metavar="N",
                   help="instead of categories: N common dishes that are not on --menu, photos for classify train "
                        "--not-on-menu (into a workspace of their own)")
    p.add_argument("--menu", metavar="PATH", help="with --other-dishes: the menu's workspace folder, or a file of its "
                   "categories (one per line); dishes named like one of them are left out")
    p.add_argument("--per-class", type=number(int, 1, 100_000), default=d.per_class,
                   help=f"target images per category (default {d.per_class})")
    p.add_argument("--engine", type=_engine, default=d.engine, metavar="{" + ",".join(ENGINES) + "}",
                   help=f"where to search (default {d.engine})")
    p.add_argument("--urls", help="for --engine urls: lines 'category<TAB>url', or bare URLs with one CATEGORY")
    p.add_argument("--query", type=_query, default=d.query, help=f"search text; {{category}} is replaced (default {d.query!r})")
    p.add_argument("--min-size", type=MIN_SIZE, default=d.min_size_px, help="refuse images whose shorter side is below "
                   f"this (px, default {d.min_size_px})")
    p.add_argument("--threads", type=number(int, 1, 64), default=d.threads,
                   help=f"download threads (default {d.threads})")
    p.add_argument("--timeout", type=number(float, 0, 3600, low_open=True), default=d.timeout_s,
                   help=f"seconds per read of a request (default {d.timeout_s:g}); a download gets "
                        f"{DOWNLOAD_DEADLINE_TIMEOUTS}x this in all")
    p.add_argument("--search-url", help="use this search endpoint instead of the engine's own (a mirror; tests)")
    p.set_defaults(func=cmd_scrape)


def _add_dedup(sub) -> None:
    from curate.dedup import DEFAULT_SCOPE, DEFAULT_SIGNAL, DEFAULT_SIMILARITY, DEFAULT_THRESHOLD_BITS, SCOPES, SIGNALS
    from curate.embeddings import DEFAULT_MODEL
    from curate.hashing import DEFAULT_METHOD, METHODS

    p = sub.add_parser("dedup", help="mark exact and near duplicates")
    p.add_argument("--method", choices=SIGNALS, default=DEFAULT_SIGNAL,
                   help="near duplicates by perceptual hash (fast), by embedding (also crops, mirrors, rotations; "
                        f"shares suspects' cache) or both (default {DEFAULT_SIGNAL})")
    p.add_argument("--similarity", type=number(float, 0, 1, low_open=True), default=DEFAULT_SIMILARITY,
                   help=f"embedding: min cosine similarity (default {DEFAULT_SIMILARITY}, chosen in bench/dedup_quality.py)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"embedding backbone (default {DEFAULT_MODEL}, as suspects)")
    p.add_argument("--hash", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--threshold", type=number(int, 0, 64), default=DEFAULT_THRESHOLD_BITS,
                   help=f"max Hamming distance in bits (default {DEFAULT_THRESHOLD_BITS}, chosen in bench/dedup_quality.py)")
    p.add_argument("--scope", choices=SCOPES, default=DEFAULT_SCOPE)
    p.add_argument("--workers", type=number(int, 1, 64), default=None, help="hashing processes, 1 to 64 (default: "
                   "CPU count)")
    p.add_argument("--dry-run", action="store_true", help="report, change nothing")
    p.set_defaults(func=cmd_dedup)


def _add_export(sub) -> None:
    from curate.export import MAX_BALANCE, ExportConfig
    from curate.quality import FLAGS

    d = ExportConfig()
    p = sub.add_parser("export", help="write OUT/train|valid|test/<category>/ from accepted images")
    p.add_argument("out")
    p.add_argument("--split", type=number(float, 0, 1), nargs=3, default=list(d.split),
                   metavar=("TRAIN", "VALID", "TEST"),
                   help=f"fractions summing to 1 (default {' '.join(map(str, d.split))}); a split no image falls into "
                        "is not written")
    p.add_argument("--seed", type=number(int, 0), default=d.seed, help=f"seed of the split and the augmentation "
                                                                       f"(default {d.seed})")
    p.add_argument("--balance", type=number(int, 0, MAX_BALANCE), default=d.balance, metavar="N",
                   help=f"augment each training class up to N images, at most {MAX_BALANCE:,} (default {d.balance}: "
                        "off)")
    p.add_argument("--include-pending", action="store_true", help="export pending images too")
    p.add_argument("--min-per-class", type=number(int, 0), default=d.min_per_class, metavar="K",
                   help=f"refuse a class with fewer images (default {d.min_per_class})")
    p.add_argument("--exclude-flag", action="append", choices=FLAGS, metavar="FLAG",
                   help=f"leave out images with this quality flag (repeatable; one of {', '.join(FLAGS)})")
    p.add_argument("--threshold-bits", type=number(int, 0, 64), default=d.threshold_bits, metavar="BITS",
                   help=f"near-duplicates within this phash distance share a split (default {d.threshold_bits})")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is an earlier export (and nothing else)")
    p.set_defaults(func=cmd_export)


def _add_review(sub) -> None:
    p = sub.add_parser("review", help="open the review-and-crop UI in the browser")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=PORT, default=7860, help="port to listen on, 1..65535 (default 7860)")
    p.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    p.add_argument("--auth", metavar="USER:PASS", help="ask for this user name and password")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser (servers)")
    p.set_defaults(func=cmd_review)


def _add_accept(sub) -> None:
    from curate.quality import BLOCKING_FLAGS, FLAGS

    p = sub.add_parser("accept", help="accept pending images that passed the automatic checks (not duplicate, no blocking flag)")
    p.add_argument("--category", help="only this category")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--exclude-flag", action="append", choices=FLAGS, metavar="FLAG",
                       help=f"leave images with this flag pending (repeatable; default: {', '.join(BLOCKING_FLAGS)})")
    which.add_argument("--all-flags-ok", action="store_true", help="accept whatever flags an image has")
    p.set_defaults(func=cmd_accept)


def _add_suspects(sub) -> None:
    from curate.suspects import SuspectsConfig

    p = sub.add_parser("suspects", help="rank pending/accepted images by how likely they are wrong (stored for review)")
    p.add_argument("--top", type=number(int, 1), metavar="K", help="print only the K most suspicious")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--model", default=SuspectsConfig.model, help=f"embedding backbone (default {SuspectsConfig.model})")
    p.set_defaults(func=cmd_suspects)


def build_parser() -> argparse.ArgumentParser:
    from curate.workspace import STATUSES  # noqa: F401  (keeps import errors out of --help)

    parser = Parser(prog="python -m curate", description="Build a food image set: scrape or import, "
                                     "deduplicate, flag, review and export as ImageFolder.")
    parser.add_argument("--workspace", default="workspace", help="workspace folder (default: ./workspace)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_import(sub)
    p = sub.add_parser("stats", help="counts per category by status and by quality flag")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)
    _add_scrape(sub)
    _add_dedup(sub)
    p = sub.add_parser("check", help="recompute quality flags of every image")
    p.set_defaults(func=cmd_check)
    _add_export(sub)
    _add_review(sub)
    _add_accept(sub)
    p = sub.add_parser("undo", help="take back the last review decision, or the whole of the last bulk action (accept, "
                                    "bulk reject)")
    p.set_defaults(func=cmd_undo)
    _add_suspects(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from curate.workspace import Workspace, as_text

    try:
        if args.command == "import":
            from curate.importer import check_source

            check_source(args.source)  # a missing source makes no workspace
        if args.command == "scrape":
            args.chosen_categories = scrape_categories(args)  # nor do no categories
        with Workspace(args.workspace, create=args.command in ("import", "scrape"),
                       writes=args.command not in ("stats", "export")) as ws:
            return args.func(args, ws)
    except CurateError as err:
        print(f"curate: {err}", file=sys.stderr)
        return 2
    except sqlite3.Error as err:
        if "malformed" in str(err) or "not a database" in str(err):  # re-running cannot mend the file itself
            print(f"curate: the manifest {args.workspace}/manifest.sqlite is damaged ({err}); restore it from a "
                  "backup, or import the images folder into a new workspace", file=sys.stderr)
            return 2
        print(f"curate: the manifest refused the change ({err}); what was recorded before is kept, re-run to carry on",
              file=sys.stderr)
        return 2
    except OSError as err:  # disk full or permissions while writing files (export, thumbnails)
        # ENOSPC names whichever file the copy had open (often the source): say nothing of it
        where = f" ({err.filename})" if err.filename and err.errno not in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"curate: {err.strerror or err}{where}; nothing half-written is kept, re-run to carry on", file=sys.stderr)
        return 2
    except UnicodeEncodeError as err:  # a name typed or stored in another encoding than UTF-8
        print(f"curate: '{as_text(err.object)}' is not valid UTF-8 text; give the name in UTF-8", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("curate: interrupted; re-run the same command to carry on", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
