"""Library text shown on the command line: a backticked parameter name (`max_pixels`) that is an option of
the running subcommand is shown as that option's flag (--max-pixels); other backticked text stays as it is.

Library messages (raises and logs) name parameters, never flags (core/errors.py), so that a Python caller
reads the keyword it passed; `dnc` (clients/cli.py) passes its errors, its log lines and the job summaries
its commands print through `flagged`, so a command-line user reads the flag they typed.
"""

from __future__ import annotations

import argparse
import re

_NAMED = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def option_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> dict[str, str]:
    """dest -> flag of every option of the subcommand `args` ran (nested ones such as `repo build` too): the
    spelling the user typed when an option has several, else its first long one."""
    flags: dict[str, str] = {}
    while parser is not None:
        chosen = None
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):  # (a command may rename its dest: "repo build")
                said = str(getattr(args, action.dest, None) or "").split()
                chosen = next((action.choices[w] for w in [*said[-1:], *argv] if w in action.choices), None)
            elif action.option_strings and not isinstance(action, argparse._HelpAction):
                typed = [o for o in action.option_strings if o in argv or any(a.startswith(o + "=") for a in argv)]
                longs = [o for o in action.option_strings if o.startswith("--")]
                flags[action.dest] = (typed or longs or action.option_strings)[0]
        parser = chosen
    return flags


def flagged(text: str, flags: dict[str, str]) -> str:
    """`text` with each backticked name that is a key of `flags` (an option's dest) written as its flag;
    other backticked text is left as it is."""
    return _NAMED.sub(lambda m: flags.get(m.group(1), m.group(0)), text)


def shown(text: str, a: argparse.Namespace) -> str:
    """`text` as the command parsed into `a` shows it (the flags clients/cli.main gave it; none elsewhere)."""
    return flagged(text, getattr(a, "_flags", {}))
