"""`--K auto`: each class's number of sub-centroids, chosen on held-out data of the classes.

Both tasks hand over a table: for each candidate K (in increasing size), the (M, C) best cosine of M
held-out rows (images, or cells) to each class's sub-centroids built with that K from the rest of the
data. The choice is then made from the table alone, without building further sets: first the one K for
every class that answers the held-out rows best (a tie: the smaller), then, class by class, the K that
raises the held-out score with the other classes held where they are (sweeps until no class moves, at most
MAX_SWEEPS). A move needs a gain, or an equal score with fewer sub-centroids, so the choice ends and ties
go to smaller sets. A class's K thus answers to its own held-out rows (what it recalls) and to the others'
(what its sub-centroids take from them); a class with no held-out rows of its own stays at the best single K.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MAX_SWEEPS = 5


def choose(tables: dict, score: Callable[[np.ndarray], float], scored: list[int] | None = None) -> tuple[list, dict]:
    """tables: {candidate: (M, C) held-out best cosine per class}, candidates in increasing size; score: (M,)
    predicted classes -> a figure to maximise (a share in [0, 1]); scored: the classes with held-out rows of
    their own (default all). A class without any keeps the best single K: with no rows of its own, more
    sub-centroids could only take rows from the others, and its K would be set by ties alone. Returns (the K
    of each class, {"single": {candidate: held-out % with it for every class}, "per_class": held-out % of
    the returned choice})."""
    cands = list(tables)
    c = next(iter(tables.values())).shape[1]
    movable = range(c) if scored is None else sorted(set(scored))

    def value(assign: list) -> float:
        return score(np.stack([tables[assign[j]][:, j] for j in range(c)], 1).argmax(1))

    single = {str(k): value([k] * c) for k in cands}
    assign = [max(cands, key=lambda k: (single[str(k)], -cands.index(k)))] * c
    current = value(assign)
    for _ in range(MAX_SWEEPS):
        moved = False
        for j in movable:
            for k in cands:
                if k == assign[j]:
                    continue
                trial = [*assign[:j], k, *assign[j + 1:]]
                v = value(trial)
                if v > current + 1e-12 or (abs(v - current) <= 1e-12 and cands.index(k) < cands.index(assign[j])):
                    assign, current, moved = trial, v, True
        if not moved:
            break
    return assign, {"single": {k: round(100 * v, 3) for k, v in single.items()}, "per_class": round(100 * current, 3)}
