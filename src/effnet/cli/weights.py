"""``effnet weights``: the pretrained-weights catalog and the local cache.

``list`` and ``path`` read only the catalog and the cache records, so they answer without torch.
"""

from __future__ import annotations

import json

from effnet.cli.common import print_table
from effnet.core.errors import UsageError

LIST_COLUMNS = [
    ("tag", "{}"),
    ("top1", "{:.1f}"),
    ("coco_map", "{:.1f}"),
    ("resolution", "{}"),
    ("size_mb", "{:.1f}"),
    ("licence", "{}"),
    ("hash", "{}"),
    ("cached", "{}"),
]


def cmd_list(args) -> int:
    from effnet.weights.cache import describe

    rows = describe(args.filter)
    if args.cached:
        rows = [r for r in rows if r["cached"]]
    if not rows and args.filter:
        raise UsageError(f"--filter {args.filter!r} matches no weights tag")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    shown = [{**r, "tag": r["tag"] + (" *" if r["default"] else ""), "cached": "yes" if r["cached"] else ""}
             for r in rows]  # fmt: skip
    print_table(shown, LIST_COLUMNS)
    print(
        "* the member's default tag (pretrained=True); top1: published ImageNet-1k accuracy at that resolution; "
        "coco_map: a detector's published COCO val2017 mAP"
    )
    return 0


def cmd_fetch(args) -> int:
    from effnet.weights.pretrained import fetch

    done = [fetch(tag, force=args.force) for tag in args.tags]
    _report(args, [{"tag": f.tag, "path": str(f.path), "downloaded": f.downloaded} for f in done])
    return 0


def cmd_import(args) -> int:
    from effnet.weights.pretrained import import_file

    done = import_file(args.tag, args.file)
    _report(args, [{"tag": done.tag, "path": str(done.path), "imported_from": args.file}])
    return 0


def _report(args, rows: list[dict]) -> None:
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        how = "imported" if "imported_from" in row else "downloaded" if row["downloaded"] else "already cached"
        print(f"{row['tag']}: {how}, {row['path']}")


def cmd_verify(args) -> int:
    from effnet.weights import cache
    from effnet.weights.catalog import get_entry

    tags = [get_entry(t).tag for t in args.tags] if args.tags else cache.cached_tags()
    rows = []
    for tag in tags:
        ok, found = cache.verify(tag)
        rows.append({"tag": tag, "ok": ok, "found": found})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['tag']}: {'ok' if row['ok'] else 'FAILED'}, {row['found']}")
        if not rows:
            print("the cache holds no weights")
    return 0 if all(r["ok"] for r in rows) else 1


def cmd_path(args) -> int:
    from effnet.weights import cache
    from effnet.weights.catalog import get_entry

    if args.tag is None:
        row = {"home": str(cache.home())}
    else:
        tag = get_entry(args.tag).tag
        row = {"tag": tag, "path": str(cache.weights_file(tag)), "cached": tag in cache.cached_tags()}
    print(json.dumps(row, indent=2) if args.json else row.get("path", row.get("home")))
    return 0


def cmd_remove(args) -> int:
    from effnet.weights import cache
    from effnet.weights.catalog import get_entry

    for name in args.tags:
        tag = get_entry(name).tag
        print(f"{tag}: {'removed' if cache.remove(tag) else 'was not cached'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("weights", help="pretrained weights: list, fetch, import, verify the local cache")
    ws = p.add_subparsers(dest="weights_command", required=True)

    q = ws.add_parser("list", help="every published checkpoint: tag, top-1, size, licence, cached or not")
    q.add_argument("--filter", help="part of a tag or a glob, e.g. b3 or '*tf_ns*'")
    q.add_argument("--cached", action="store_true", help="only the tags the cache holds")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)

    q = ws.add_parser("fetch", help="download, check and convert tags into the cache (no-op when cached)")
    q.add_argument("tags", nargs="+", metavar="TAG", help="a tag, an alias (lite0) or a model name (its default)")
    q.add_argument("--force", action="store_true", help="download and convert again even when cached")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_fetch)

    q = ws.add_parser("import", help="a file downloaded elsewhere (air-gapped): hash-checked, converted, cached")
    q.add_argument("tag", metavar="TAG")
    q.add_argument("file", metavar="FILE", help="the published file (see `effnet weights list --json` for its URL)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_import)

    q = ws.add_parser("verify", help="recompute the sha256 of cached files against their records (exit 1 if changed)")
    q.add_argument("tags", nargs="*", metavar="TAG", help="default: every cached tag")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_verify)

    q = ws.add_parser("path", help="the cache folder (EFFNET_HOME), or where a tag's converted file lives")
    q.add_argument("tag", nargs="?", metavar="TAG")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_path)

    q = ws.add_parser("remove", help="drop tags from the cache")
    q.add_argument("tags", nargs="+", metavar="TAG")
    q.set_defaults(func=cmd_remove)
