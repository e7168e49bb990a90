"""Progress bars that show on a terminal only.

A tqdm bar redraws itself many times a second; written into a file (`make demo > log`, a CI job) it
becomes thousands of carriage-return lines that bury the messages that matter. tqdm's `disable=None`
turns a bar off when its stream (stderr) is not a terminal, so every bar of the library is made here
with that default: bars on a terminal, none in logs. `show=False` turns one off outright (the ranks
other than the first of a distributed run).
"""

from __future__ import annotations

from tqdm import tqdm


def bar(iterable=None, *, show: bool = True, **kwargs) -> tqdm:
    """tqdm(iterable, **kwargs), shown only on a terminal (and only when `show`)."""
    kwargs.setdefault("disable", None if show else True)
    return tqdm(iterable, **kwargs)
