"""``effnet data check``: every file of a training tree that cannot be used, with the reason."""

from __future__ import annotations

import json
import sys


def cmd_data_check(args) -> int:
    from effnet.datasets.check import check_tree

    report = check_tree(args.path, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for bad in report.bad:
            print(f"BAD  {bad['path']}: {bad['reason']}")
        print(f"{len(report.good)} good, {len(report.bad)} bad")
    return 1 if report.bad else 0


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect training data").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("check", help="list every file that cannot be used, with the reason (exit 1 if any)")
    p.add_argument("path", help="an image folder (searched recursively) or one file")
    p.add_argument("--json", action="store_true", help='print {"bad": [{"path", "reason"}], "good": N}')
    p.set_defaults(func=cmd_data_check, extras=())
