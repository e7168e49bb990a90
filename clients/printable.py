"""Text from files and servers made safe to print on a terminal.

File names, class labels, exemplar paths and server messages come from users, data sets and the network:
a name holding an escape sequence or a newline would rewrite the terminal or forge table rows. Tables
and messages show such characters escaped (\\x1b, \\n), and leave every printable character, non-ASCII
letters included, as it is. JSON output needs nothing: json.dumps escapes control characters itself.
"""

from __future__ import annotations


def shown(text: object) -> str:
    """`text` with every non-printable character (controls, line and paragraph separators) escaped."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)
