"""The `dnc` command: one entry point whose subcommands come from each layer of the stack.

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
from dnc.core.images import DataError
from dnc.export import cli as export_cli
from dnc.serving import cli as serving_cli
from dnc.serving.server import ServerError
from dnc.training import cli as training_cli


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
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C stops every command cleanly (a video job removes its partial files), even when the process
        # inherited SIGINT ignored, as a process started in the background of a non-interactive shell does.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Under torchrun only rank 0 reports progress; other ranks log warnings and errors.
    quiet = int(os.environ.get("RANK", "0")) != 0
    logging.basicConfig(level=logging.WARNING if quiet else logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except (ValueError, DataError, FileNotFoundError, FloatingPointError, ServerError) as e:
        print(f"dnc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dnc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
