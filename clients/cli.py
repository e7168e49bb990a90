"""The `dnc` command: one entry point whose subcommands come from each layer of the stack.

A failure whose cause lies outside the code (a project error, core/errors.DNCError; an image refused by
core/preprocess.ImageError; a file the user named missing or unwritable, OSError) prints as one line,
`dnc CMD: error: MESSAGE`, and exits 2; anything else is a bug and keeps its traceback. Library messages
name their parameters in backticks (`max_pixels`); a name that is an option of the running subcommand is
shown as its flag (--max-pixels), in errors and log lines alike.

Run under torchrun for data-parallel training: `torchrun --nproc_per_node 2 -m dnc.clients.cli train ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from dnc.clients import classify_cli, segment_cli
from dnc.clients.flags import flagged, option_flags
from dnc.core.errors import DNCError
from dnc.core.preprocess import ImageError
from dnc.export import cli as export_cli
from dnc.serving import cli as serving_cli
from dnc.training import cli as training_cli

# What prints as one line and exits 2: causes outside the code. (ImageError is standalone: core/preprocess.py
# is copied into model repositories and runs without the rest of the package.)
USER_ERRORS = (DNCError, ImageError, OSError)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dnc", description="Train, export and serve Deep Nearest Centroids models")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    training_cli.add_commands(sub)
    export_cli.add_commands(sub)
    serving_cli.add_commands(sub)
    classify_cli.add_commands(sub)
    segment_cli.add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = option_flags(parser, args, sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C stops every command cleanly (a video job removes its partial files), even when the process
        # inherited SIGINT ignored, as a process started in the background of a non-interactive shell does.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Under torchrun only rank 0 reports progress; other ranks log warnings and errors.
    quiet = int(os.environ.get("RANK", "0")) != 0
    handler = logging.StreamHandler()
    handler.setFormatter(_FlagFormatter(flags, fmt="%(asctime)s %(levelname)s %(name)s: %(message)s",
                                        datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.WARNING if quiet else logging.DEBUG if args.verbose else logging.INFO,
                        handlers=[handler])
    args._flags = flags  # (commands that print library text show it with these too: clients/flags.py)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"dnc {args.command}: error: {flagged(str(e), flags)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dnc {args.command}: interrupted", file=sys.stderr)
        return 130


class _FlagFormatter(logging.Formatter):
    """Log lines with the running subcommand's options shown as its flags (see `flagged`)."""

    def __init__(self, flags: dict[str, str], **kwargs):
        super().__init__(**kwargs)
        self.flags = flags

    def formatMessage(self, record: logging.LogRecord) -> str:
        return flagged(super().formatMessage(record), self.flags)


if __name__ == "__main__":
    sys.exit(main())
