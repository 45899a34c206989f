"""The ``effnet`` command: a thin layer over the Python API.

Arguments are parsed first; a command imports the layers it needs only when it runs, so
``effnet --help`` answers without loading torch (these imports inside the ``cmd_*`` functions
are the one place effnet imports its own modules lazily). Expected failures (bad names, files,
numbers) print one line and exit 2; a run that fails after it started exits 1; a traceback
means a bug in effnet.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings

from effnet import __version__
from effnet.cli import compress, data, deploy, models, search, train, weights
from effnet.core.errors import EffnetError, EffnetWarning
from effnet.core.extras import require

DOMAINS = (models, weights, deploy, train, search, compress, data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effnet", description="EfficientNet: build, scale, train, compress, deploy.")
    parser.add_argument("--version", action="version", version=f"effnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for domain in DOMAINS:
        domain.register(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None, _default=warnings.formatwarning) -> str:
    """effnet's own warnings as one line, like its errors; other libraries' as they print them.
    (Only the format changes: recorders such as pytest.warns still see every warning.)"""
    if issubclass(category, EffnetWarning):
        return f"effnet: warning: {message}\n"
    return _default(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _format_warning
    try:
        require(*getattr(args, "extras", ()))
        return args.func(args)
    except EffnetError as exc:
        print(f"effnet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader of our output left (`effnet eval ... | head`): stop quietly as Unix tools do,
        # and point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        # The disk filled up or a path is not writable: every write is atomic, so nothing half-written stays.
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"effnet: error: {exc.strerror}{where}; nothing half-written was left behind", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"effnet: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130


def _resume_hint(args) -> str:
    if getattr(args, "command", None) in ("train", "distill") and getattr(args, "out", None):
        return f"; continue with: effnet {args.command} --out {args.out} --resume"
    return ""
