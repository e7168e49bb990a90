"""Which DNC models a server serves, and the one a client uses when none is named.

A server often serves a classifier and a segmenter side by side (the demo's `dnc` and `scenes`); these turn
Triton's list of loaded models (name -> task, see DNCClient.served_models) into the model a command uses and
into messages that name what is served when the asked-for model is not.
"""

from __future__ import annotations

from dnc.clients.errors import ClientError
from dnc.core import formats as F
from dnc.core import tasks


def wanted_task(task: str | tasks.Task | None) -> tasks.Task | None:
    """The task a client asks for (None: any)."""
    return None if task is None else tasks.task(task)


def of_task(served: dict[str, str], task: str | tasks.Task | None) -> list[str]:
    """The served models (name -> task name) of `task` (any when None), sorted."""
    want = wanted_task(task)
    return sorted(n for n, t in served.items() if want is None or tasks.task(t) is want)


def _nouns(task: str | tasks.Task | None) -> tuple[str, str]:
    want = wanted_task(task)
    return ("DNC model", "DNC models") if want is None else (want.noun, want.plural)


def served_text(served: dict[str, str], task: str | tasks.Task | None, url: str) -> str:
    """What the server offers for `task`: "served segmenters: a, b", or "no segmenter is served at URL;
    served classifiers: dnc" (served: name -> task, see DNCClient.served_models)."""
    one, many = _nouns(task)
    fits = of_task(served, task)
    if fits:
        return f"served {many}: {', '.join(fits)}"
    groups = {}
    for n in sorted(served):
        groups.setdefault(_nouns(served[n])[1], []).append(n)
    if not groups:
        return f"no {one} is served at {url} (are its models still loading? `dnc status` tells)"
    return f"no {one} is served at {url}; " + "; ".join(f"served {g}: {', '.join(ns)}" for g, ns in groups.items())


def choose_model(served: dict[str, str], task: str | tasks.Task | None, url: str) -> str:
    """The model a client uses when none is named: the one served model of `task` (any task when None).
    When several are served, the one named `dnc` (the default of `dnc repo build --name`) if it is among
    them, so that naming none keeps meaning dnc; otherwise a ClientError naming them (pass `model`)."""
    fits = of_task(served, task)
    if len(fits) == 1:
        return fits[0]
    if F.DEFAULT_MODEL in fits:
        return F.DEFAULT_MODEL
    if not fits:
        raise ClientError(served_text(served, task, url))
    raise ClientError(f"several {_nouns(task)[1]} are served at {url}: {', '.join(fits)}; pass `model`")
