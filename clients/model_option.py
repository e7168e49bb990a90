"""`--model` of the client commands: when not given, the served model of the command's task, said on stderr.

A server often serves a classifier and a segmenter side by side (the demo's `dnc` and `scenes`), so a
fixed default would name the wrong one for one of the two commands. The model is resolved once per
command, before any picture is read or any video job starts, so that a Ray job's tasks all get a name.
"""

from __future__ import annotations

import argparse
import sys

from dnc.clients.client import DNCClient, of_task
from dnc.core import tasks


def served_model(a: argparse.Namespace, task: tasks.Task) -> str:
    """The model `dnc classify`/`dnc segment` use: --model (refused when it is of another task, naming the
    served models of this one), or the server's one model of `task` (its `dnc` among several), said on
    stderr. Resolved once per parsed command line (kept in `a`)."""
    if getattr(a, "_served_model", None):
        return a._served_model
    with DNCClient(a.url, a.protocol, a.model, task=task) as client:
        say_choice(a, client, task)
    return a._served_model


def say_choice(a: argparse.Namespace, client: DNCClient, task: tasks.Task) -> None:
    """Say on stderr which model a client made with model=None chose (nothing when --model named it)."""
    a._served_model = client.model
    if client.chosen:
        others = [n for n in of_task(client.served, task) if n != client.model]
        also = f" (also served: {', '.join(others)}; pick one with --model)" if others else ""
        print(f"dnc {a.command}: using the served {task.noun} {client.model!r}{also}", file=sys.stderr)
