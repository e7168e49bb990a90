"""Hot-swap the class list of a running server: validate a centroid set, write it, wait for the answer.

The server polls its repository (see server.py), so a swap is a change of files, made by whoever may
write the repository, and nothing else can make one. Order of a swap, and why:
0. One blank probe checks that the server at --url answers with the class list the repository records
   (a wrong --url, or a server serving a copy of the repository, is refused before anything changes).
1. The set is refused unless it was made for the model's task (a classification set is refused as such
   on a segmenter, and the reverse), pairs with the served embedding model (fingerprint, D), holds finite
   L2-normalised centroids and valid class names; its head graph must run (nothing changes otherwise).
2. The old head's files are kept in memory; the new set, then the new head graph, are written into the
   repository, the graph last and atomically (os.replace): the poller sees the old head or the new one,
   never half of one. Triton loads the new head in the background, swaps it in when ready and reloads
   the ensemble after it; requests in flight finish on the old head, so every response comes entirely
   from one class list. The server never unloads the head first (no window without a head).
3. The swap waits until the entry model answers with the new set id. If the server log reports that the
   head failed to load, or no answer comes within the timeout, the old files are written back (the old
   head is still serving) and the error says why. repository.json records the new list once it answers.
A fleet (several servers on one repository: `dnc serve --replicas`, or the pods of deploy/kubernetes/) is
swapped the same way, with every replica's gRPC address: step 0 asks each one, the set is written once
(every replica polls the same files), and step 3 waits until every replica answers with the new list,
each watched in a thread of its own. One that reports a failed load, or does not answer in time, puts
the old files back for all: those that had loaded the new head load the old one again, and the swap
waits for every replica to answer with the old list before it reports the failure. The result gives each
replica's time to the new list and the mixed window: from the first replica answering with the new list
to the last (while it lasts, two requests may be answered by different lists, each response naming its own).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import numpy as np

from dnc.core import centroid_set, tasks
from dnc.core import formats as F
from dnc.core.errors import DNCError
from dnc.serving import repository

log = logging.getLogger(__name__)

PROBE_S = 0.05  # between two questions to a server while waiting for a list


def _head_failed(head: str) -> re.Pattern:
    return re.compile(rf"failed to load (?:model )?'{re.escape(head)}'.*")  # Triton's log line for a failed load


class SwapError(DNCError, ValueError):
    """A swap that did not happen (the message says which list serves), or whose end was not seen."""


def swap(repo: str | Path, centroids: str | Path, url: str | list[str], timeout: float = 120.0,
         log_file: str | Path | list | None = None, name: str | None = None) -> dict:
    """Swap the class list of model `name` (None: the repository's only model) to the set at `centroids` on
    the server of `repo` whose gRPC address is `url` (a list: every replica of a fleet); returns timings and
    the old/new set ids. `log_file` (the server's log; a list: one per replica, or None for those whose log
    is not at hand) lets a failed load be reported at once, with Triton's reason. Concurrent swaps and
    builds of one repository run one after the other; other models of the repository are not touched."""
    repo = Path(repo)
    t0 = time.perf_counter()
    urls = [url] if isinstance(url, str) else list(url)
    logs = log_file if isinstance(log_file, list | tuple) else [log_file] * len(urls)
    if not urls or len(logs) != len(urls):
        raise SwapError(f"{len(urls)} server address(es) and {len(logs)} log(s): give one address per replica")
    repository.model_info(repo, name)  # refuse a folder that is not a repository before creating the lock there
    try:
        with repository.locked(repo):
            res = _swap_locked(repo, centroids, urls=urls, timeout=timeout,
                               logs=[Path(f) if f else None for f in logs], name=name)
    except DNCError as e:  # (anything else is a bug: it keeps its traceback)
        if isinstance(e, SwapError | centroid_set.CentroidSetError):
            raise
        raise SwapError(str(e)) from None
    res["total_seconds"] = time.perf_counter() - t0
    return res


def _swap_locked(repo: Path, centroids: str | Path, urls: list[str], timeout: float, logs: list[Path | None],
                 name: str | None) -> dict:
    t0 = time.perf_counter()
    info = repository.model_info(repo, name)
    name, task = info["name"], tasks.of(info)
    cs = centroid_set.load(centroids)
    check_task(cs, task, name, centroids)  # before the pairing: a set of the other task has another embedding too
    centroid_set.check_pairing(cs, info["embed_fingerprint"], info["dim"], str(centroids))
    probes = [Probe(u, name, info["preprocessing"], info["dim"]) for u in urls]
    served = {u: p.set_id() for u, p in zip(urls, probes, strict=True)}
    if len(set(served.values())) > 1:
        raise SwapError(f"the replicas answer {name} with different class lists ({_listing(served)}): a swap is "
                        "settling (they poll the repository every second: try again in a few seconds), or a replica "
                        "cannot load the repository's head (see its log); nothing changed")
    info = _reconcile(repo, info, next(iter(served.values())), urls[0] if len(urls) == 1 else f"{len(urls)} replicas")
    old_id = info["set"]["set_id"]
    if cs.set_id == old_id and _set_on_disk(repo, name) == old_id:
        log.info("class list %s is already served by %s", old_id, name)
        return {"model": name, "from": old_id, "to": old_id, "classes": list(cs.class_names), "answering_seconds": 0.0,
                "replicas": len(urls), "mixed_window_seconds": 0.0}
    backup = repository.head_files(repo, name)
    watches = [_LogWatch(f, F.family(name).head) for f in logs]
    try:
        repository.write_head(repo, cs, info["top_k"], name)  # built and checked to run before anything is written
    except BaseException:
        _restore(repo, backup, name)
        raise
    try:
        times = wait_all(probes, cs.set_id, timeout, watches)
    except SwapError as e:
        _restore(repo, backup, name)
        try:  # a server may have loaded the new head just after the deadline: say what answers now
            wait_all(probes, old_id, min(timeout, 30.0))
            now = f"class list {old_id} is serving" + (" on every replica" if len(urls) > 1 else "")
        except SwapError:
            now = f"not every server answers with {old_id} yet (see the logs); `dnc swap` again to settle it"
        raise SwapError(f"{e}; the old head is back in {repo} and {now}") from e
    except KeyboardInterrupt:
        log.warning("interrupted: the repository holds the head of %s, which the server loads; `dnc swap` "
                    "again records it", cs.set_id)
        raise
    _record(repo, info, cs, old_id=old_id, source=str(centroids))
    total = time.perf_counter() - t0
    log.info("%s: swapped %s -> %s (%d classes) in %.2f s", name, old_id, cs.set_id, cs.num_classes, total)
    return {"model": name, "from": old_id, "to": cs.set_id, "classes": list(cs.class_names),
            "answering_seconds": max(times), "replicas": len(urls), "replica_seconds": times,
            "mixed_window_seconds": max(times) - min(times)}


def wait_all(probes: list[Probe], set_id: str, timeout: float, watches: list[_LogWatch] | None = None) -> list[float]:
    """Seconds (from now) until each probe's server answers with `set_id`, all watched at once; SwapError
    naming every server that reported a failed load or did not answer in time."""
    t0 = time.perf_counter()
    times: list[float | None] = [None] * len(probes)
    errors: list[str | None] = [None] * len(probes)

    def one(i: int) -> None:
        watch = watches[i] if watches else None
        try:
            times[i] = probes[i].wait_for(set_id, timeout, failed=watch.head_failed if watch else lambda: None, t0=t0)
        except SwapError as e:
            errors[i] = str(e)

    if len(probes) == 1:
        one(0)
    else:
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(probes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 60)
    failed = [(p.url, err or "no answer") for p, err, t in zip(probes, errors, times, strict=True) if t is None]
    if failed:
        if len(probes) == 1:
            raise SwapError(failed[0][1])
        raise SwapError(f"{len(failed)} of {len(probes)} replicas did not take class list {set_id}: "
                        + "; ".join(f"{url}: {err}" for url, err in failed))
    return times


def _listing(served: dict[str, str]) -> str:
    return ", ".join(f"{url}: {sid}" for url, sid in served.items())


def check_task(cs: centroid_set.CentroidSet, task: tasks.Task, name: str, where: str | Path) -> None:
    """Refuse a set made for the other task by saying so: its embedding fingerprint differs too, but a
    message about fingerprints would send the user recomputing a set that can never fit this model."""
    if tasks.task(cs.task) is not task:
        raise SwapError(f"{where} is a {cs.task} set; model {name} is a {task.noun} (served {task.plural} take sets "
                        f"made from {task.data}: {task.set_hint}, with the embed.onnx of its export); nothing "
                        "changed")


def _record(repo: Path, info: dict, cs: centroid_set.CentroidSet, old_id: str, source: str) -> None:
    info["set"] = repository.set_info(cs)
    info["swaps"] = (info.get("swaps", []) + [{"at": repository.now(), "from": old_id, "to": cs.set_id,
                                                "centroids": source}])[-50:]
    repository.record_model(repo, info["name"], info)


def _reconcile(repo: Path, info: dict, served: str, url: str) -> dict:
    """Check the server at `url` serves this repository's list. If it serves the head on disk while
    repository.json names another (a swap whose reload call was lost, then loaded), record it."""
    if served == info["set"]["set_id"]:
        return info
    on_disk = repository.head_dir(repo, info["name"]) / repository.SET_FOLDER
    try:
        disk = centroid_set.load(on_disk)
    except centroid_set.CentroidSetError:
        disk = None
    if disk is not None and disk.set_id == served:
        log.warning("%s: the server answers with %s, the head on disk; recording it in %s (was %s)", info["name"],
                    served, repository.INFO_FILE, info["set"]["set_id"])
        _record(repo, info, disk, old_id=info["set"]["set_id"], source=str(on_disk))
        return info
    who = f"the server at {url}" if "replicas" not in url else f"the {url}"
    raise SwapError(f"{who} answer{'s' if who.startswith('the server') else ''} {info['name']} with class list "
                    f"{served}, but {repo} serves {info['set']['set_id']}: are they the server(s) of `repo`? (nothing "
                    "changed)")


def _reason(e: Exception) -> str:
    msg = str(e)
    return msg.strip().splitlines()[0] if msg.strip() else type(e).__name__


def _restore(repo: Path, files: dict[str, bytes], name: str) -> None:
    """Write the previous head (from repository.head_files) back, in the order a swap writes one."""
    def write_set(folder: Path) -> None:
        for rel, data in files.items():
            if Path(rel).parts[0] == repository.SET_FOLDER:
                dest = folder / Path(rel).relative_to(repository.SET_FOLDER)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)

    repository.publish_head(repo, write_set, files["1/model.onnx"], name)


def _set_on_disk(repo: Path, name: str) -> str | None:
    try:
        return centroid_set.load(repository.head_dir(repo, name) / repository.SET_FOLDER).set_id
    except centroid_set.CentroidSetError:
        return None


class _LogWatch:
    """Reads what the server log gains from now on (incrementally) for Triton's report of a failed head load."""

    def __init__(self, log_file: Path | None, head: str):
        self.pattern = _head_failed(head)
        self.path = log_file if log_file is not None and log_file.is_file() else None
        self.offset = self.path.stat().st_size if self.path else 0
        self.tail = ""

    def head_failed(self) -> str | None:
        if self.path is None:
            return None
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(1 << 20)
        self.offset += len(data)
        text = self.tail + data.decode(errors="replace")
        found = self.pattern.search(text)
        self.tail = text[-4096:]  # a line split between two reads is still found
        return found.group(0)[:300] if found else None


class Probe:
    """Asks the entry model of one served model, over gRPC, which class list answers: one blank picture
    (uint8 pixels at the trained size), output set_id only. Given the embedding's D, waiting for a list first
    asks the head model alone (one constant embedding: no picture preprocessed or embedded, so probing every
    PROBE_S costs the server next to nothing), and asks the entry only once the head has the list (Triton
    reloads the ensemble just after it)."""

    def __init__(self, url: str, name: str, prep: dict, dim: int | None = None):
        fam = F.family(name)
        self.url, self.entry, self.head = url, fam.entry, fam.head
        size, chans = int(prep["image_size"]), int(prep["channels"])
        self.pixels = np.zeros((1, size, size, chans), np.uint8)  # (1, H, W, C)
        task = tasks.of(prep)
        self.head_inputs = {} if not dim else (  # a unit embedding; a segmenter's of one cell, answered at 1 x 1
            {task.embed_output.name: np.ones((1, dim, 1, 1), np.float32), F.OUTPUT_SIZE: np.ones((1, 2), np.int64)}
            if task.dense else {task.embed_output.name: np.full((1, dim), dim ** -0.5, np.float32)})

    def set_id(self, timeout: float = 30.0) -> str:
        """The set id the entry model answers with now."""
        client = _client(self.url)
        try:
            return self._ask(client, timeout)
        finally:
            client.close()

    def wait_for(self, set_id: str, timeout: float, failed=lambda: None, t0: float | None = None) -> float:
        """Seconds (since `t0`, a perf_counter time; default now) until the entry model answers with `set_id`
        (the ensemble reloads after the head); SwapError when `failed()` gives a reason or after `timeout`."""
        t0 = time.perf_counter() if t0 is None else t0
        client = _client(self.url)
        head_has_it = not self.head_inputs
        try:
            while True:
                reason = failed()
                if reason:
                    raise SwapError(f"the server did not load the new head: {reason}")
                left = max(1.0, timeout - (time.perf_counter() - t0))
                if not head_has_it:  # the head alone first (cheap); a head not reachable here: the entry only
                    try:
                        head_has_it = self._ask(client, left, self.head, self.head_inputs) == set_id
                    except SwapError:
                        head_has_it = True
                try:
                    if head_has_it and self._ask(client, left) == set_id:
                        return time.perf_counter() - t0
                except SwapError:
                    pass  # keep probing until the deadline
                if time.perf_counter() - t0 > timeout:
                    raise SwapError(f"the server has not answered with the new list {set_id} within {timeout:.0f} s "
                                    "(see the server log)")
                time.sleep(PROBE_S)
        finally:
            client.close()

    def _ask(self, client, timeout: float, model: str | None = None, inputs: dict | None = None) -> str:
        """The set id `model` (default: the entry, asked with the blank picture) answers `inputs` with."""
        import tritonclient.grpc as grpc
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        feeds = []
        for name, value in (inputs or {F.PIXELS: self.pixels}).items():
            feeds.append(grpc.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype)))
            feeds[-1].set_data_from_numpy(value)
        try:
            got = client.infer(model or self.entry, feeds, outputs=[grpc.InferRequestedOutput(F.SET_ID)],
                               client_timeout=timeout)
        except InferenceServerException as e:
            raise SwapError(f"no DNC model {model or self.entry!r} answers over gRPC at {self.url} ({_reason(e)}); "
                            "`url` is the gRPC address (default port 8001)") from e
        return got.as_numpy(F.SET_ID).reshape(-1)[0].decode()


def _client(url: str):
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    try:
        return grpc.InferenceServerClient(url)
    except InferenceServerException as e:
        raise SwapError(f"cannot use `url` {url}: {_reason(e)} (give HOST:PORT of the gRPC endpoint)") from e
