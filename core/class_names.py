"""Class names: the one rule every writer and reader of a class list applies.

A class name travels into checkpoints, exports, centroid sets, the served head graph (as labels),
responses and terminals, so it is checked where it enters: strings, non-empty, unique, at most
MAX_LENGTH characters, and no control or line-separator characters (a newline, a NUL or an escape
sequence in a label would corrupt logs, tables and the terminals that print them; a bidirectional
override would make a label display as another).

Every writer of this project (`dnc write-folder`, `dnc write-scenes`) names a class by `safe_name`, the
form that survives being a folder name: a class is then named the same in an image folder, in a
segmentation folder's classes.json and in every class list made from either, so lists built from both
line up when they are compared or swapped ("T-shirt/top" is "T-shirt-top" everywhere).
"""

from __future__ import annotations

import unicodedata

from dnc.core.errors import InputError

MAX_LENGTH = 100
CLASSES_FILE = "classes.json"  # a segmentation folder's class list (seg_folder.py); image folders check for it
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")  # reorder what a terminal shows


def class_name_problem(name: object) -> str | None:
    """What is wrong with one class name, in words, or None."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if not name:
        return "is empty"
    if len(name) > MAX_LENGTH:
        return f"has {len(name)} characters (at most {MAX_LENGTH})"
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in BIDI_CONTROLS]
    if bad:
        return f"holds the control character {bad[0]!r}"
    return None


def check_class_names(names: object, where: str) -> list[str]:
    """`names` as a list when it is a valid class list; ValueError naming the first culprit otherwise."""
    if not isinstance(names, (list, tuple)):
        raise InputError(f"{where}: class names must be a list of strings, got a {type(names).__name__}")
    for i, name in enumerate(names):
        problem = class_name_problem(name)
        if problem:
            shown = repr(name)[:60] + ("..." if len(repr(name)) > 60 else "")
            raise InputError(f"{where}: class name {i} ({shown}) {problem}")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise InputError(f"{where}: class names {seen[name]} and {i} are both {name!r}")
        seen[name] = i
    return list(names)


def safe_name(name: str) -> str:
    """A class name in the form every writer gives it: usable as a folder name ('/' and '\\' become '-',
    outer blanks dropped), so a class read back from a folder has the name it was written with."""
    return name.replace("/", "-").replace("\\", "-").strip() or "_"
