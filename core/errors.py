"""The project's errors: one base class for every failure whose cause lies outside the code.

`DNCError` is what a bad input, a file that is not what it claims, a refused request or an unreachable
server raises; the `dnc` command prints it as one line and exits 2. Anything else that escapes is a bug
and keeps its traceback. Each layer's own errors (DataError, ExportError, SwapError, ...) derive from it;
most also derive from the built-in class they refine (ValueError, OSError, RuntimeError), so code that
catches those keeps working.

Messages name the culprit (the file, the field, its value) and the remedy in terms of the library's own
parameters, in backticks (`max_pixels`), never a command-line flag: the command line shows them as its
flags (`--max-pixels`; clients/cli.py), a Python caller sees the keyword it passed.

core/preprocess.py keeps its ImageError standalone (the file is copied into every model repository and
runs in the python backend's stub without the rest of the package); the command line catches it too.
"""

from __future__ import annotations


class DNCError(Exception):
    """A failure with a cause outside the code; its message names the culprit and the remedy."""


class InputError(DNCError, ValueError):
    """A value given to the library (an argument, a file's field) that it cannot use."""


class DivergedError(DNCError, FloatingPointError):
    """Training produced a non-finite loss: the run's settings, not the code, need changing."""
