"""Hot-swap the class list of a running server: validate a centroid set, write it, one reload call.

Order of a swap, and why:
0. One blank probe checks that the server at --url answers with the class list the repository records
   (a wrong --url, or a server serving a copy of the repository, is refused before anything changes).
1. The set is refused unless it pairs with the served embedding model (fingerprint, D), holds finite
   L2-normalised centroids and named, non-empty classes; its head graph must run (nothing changes).
2. The new head and set are written into the repository on disk (the head must exist on disk, not
   only as a load-call override: Triton server issue 4630), keeping the old files aside.
3. One `load` call of the head with its config (a config forces a reload): Triton loads the new head
   in the background, swaps it in when ready, and reloads the ensemble after it. Requests in flight
   finish on the old head, so every response comes entirely from one class list. Never
   unload-then-load: that leaves a window with no head. The call goes over gRPC: over HTTP, Triton
   2.51's HTTP frontend held every in-flight HTTP inference request until the load finished (1.4 s
   here, measured by benchmarks/triton_serving.py); over gRPC, HTTP and gRPC requests flow on.
4. If Triton refuses or the load fails, the old files are put back (the old head is still serving)
   and the error says why; when the call itself was lost (timeout, connection), the server is asked
   which list it answers with first. After a load, repository.json records the new list, then we
   wait until the entry model answers with the new set id.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from export import centroid_set
from export import formats as F
from export.staging import publish
from serving import repository
from serving.server import GRPC_KEY_HEADER

log = logging.getLogger(__name__)


LOCK_FILE = ".swap.lock"
BACKUP_FOLDER = f".{F.HEAD_MODEL}.previous"  # the head being replaced, until the reload succeeds


class SwapError(ValueError):
    """A swap that did not happen (the message says which list serves), or whose end was not seen."""


def swap(repo: str | Path, centroids: str | Path, url: str, key: str | None, timeout: float = 120.0) -> dict:
    """Swap the served class list to the set at `centroids` on the server whose gRPC address is `url`;
    returns timings and the old/new set ids.
    Concurrent swaps of one repository run one after the other (a lock file in the repository)."""
    repo = Path(repo)
    t0 = time.perf_counter()
    repository.read_info(repo)  # refuse a folder that is not a repository before creating the lock there
    with open(repo / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = _swap_locked(repo, centroids, url, key, timeout)
    res["total_seconds"] = time.perf_counter() - t0
    return res


def _swap_locked(repo: Path, centroids: str | Path, url: str, key: str | None, timeout: float) -> dict:
    import tritonclient.grpc as grpc

    t0 = time.perf_counter()
    info = repository.read_info(repo)
    cs = centroid_set.load(centroids, expect_fingerprint=info["embed_fingerprint"], expect_dim=info["dim"])
    info = _reconcile(repo, info, served_set(url, info["preprocessing"]), url)
    old_id = info["set"]["set_id"]
    head_dir = repo / F.HEAD_MODEL
    backup = repo / BACKUP_FOLDER
    shutil.rmtree(backup, ignore_errors=True)
    (backup / "1").mkdir(parents=True)
    shutil.copy2(head_dir / "1" / "model.onnx", backup / "1" / "model.onnx")
    if (head_dir / repository.SET_FOLDER).is_dir():
        shutil.copytree(head_dir / repository.SET_FOLDER, backup / repository.SET_FOLDER)
    try:
        repository.write_head(repo, cs, info["top_k"])  # built and checked to run before anything is written
    except BaseException:
        _restore(backup, head_dir)
        raise
    t_load, answering = time.perf_counter(), None
    try:
        client = grpc.InferenceServerClient(url)
        try:
            client.load_model(F.HEAD_MODEL, headers={GRPC_KEY_HEADER: key or ""},
                              config=json.dumps(repository.head_config(repo)), client_timeout=timeout)
        finally:
            client.close()
    except BaseException as e:
        if _definite(e):  # refused, or the load failed in Triton: the old head is still serving
            _restore(backup, head_dir)
            raise SwapError(f"the server at {url} did not load the new head ({_reason(e)}); class list {old_id} "
                            "is still serving") from e
        # The call was lost (timeout, connection, interrupt) after it may have reached the server, which
        # may still load the new head: keep the new files (a later swap or restart reconciles, see
        # _reconcile) and find out what answers.
        shutil.rmtree(backup, ignore_errors=True)
        if isinstance(e, KeyboardInterrupt):
            log.warning("interrupted during the reload: the server may still switch to %s, whose head is now in "
                        "%s; run `dnc swap` again to finish", cs.set_id, repo)
            raise
        try:
            answering = wait_for_set(url, cs.set_id, info["preprocessing"], min(timeout, 30.0))
        except SwapError:
            raise SwapError(f"the reload call to {url} failed ({_reason(e)}) and the server does not answer with "
                            f"{cs.set_id}; the repository holds the new head, so run `dnc swap` again") from e
        log.warning("the reload call failed (%s) but the server answers with the new list", _reason(e))
    loaded = time.perf_counter() - t_load
    # The head is loaded: record it before anything else can fail.
    _record(repo, info, cs, old_id, str(centroids))
    shutil.rmtree(backup, ignore_errors=True)
    if answering is None:
        answering = wait_for_set(url, cs.set_id, info["preprocessing"], timeout)
    total = time.perf_counter() - t0
    log.info("swapped %s -> %s (%d classes) in %.2f s (reload call %.2f s)", old_id, cs.set_id,
             cs.num_classes, total, loaded)
    return {"from": old_id, "to": cs.set_id, "classes": list(cs.class_names), "load_seconds": loaded,
            "answering_seconds": answering, "total_seconds": total}


def _record(repo: Path, info: dict, cs: centroid_set.CentroidSet, old_id: str, source: str) -> None:
    info["set"] = repository.set_info(cs)
    info["swaps"] = (info.get("swaps", []) + [{"at": repository.now(), "from": old_id, "to": cs.set_id,
                                                "centroids": source}])[-50:]
    repository.write_info(repo, info)


def _reconcile(repo: Path, info: dict, served: str, url: str) -> dict:
    """Check the server at `url` serves this repository's list. If it serves the head on disk while
    repository.json names another (a swap whose reload call was lost, then loaded), record it."""
    if served == info["set"]["set_id"]:
        return info
    on_disk = repo / F.HEAD_MODEL / repository.SET_FOLDER
    try:
        disk = centroid_set.load(on_disk)
    except centroid_set.CentroidSetError:
        disk = None
    if disk is not None and disk.set_id == served:
        log.warning("the server answers with %s, the head on disk; recording it in %s (was %s)", served,
                    repository.INFO_FILE, info["set"]["set_id"])
        _record(repo, info, disk, info["set"]["set_id"], str(on_disk))
        return info
    raise SwapError(f"the server at {url} answers with class list {served}, but {repo} serves "
                    f"{info['set']['set_id']}: is --url the server of --repo? (nothing changed)")


def _definite(e: BaseException) -> bool:
    """Whether a failed reload call certainly left the old head serving (refused or failed in Triton),
    as opposed to a call lost on the way (timeout, unavailable, interrupted)."""
    from tritonclient.utils import InferenceServerException

    if not isinstance(e, InferenceServerException):
        return False
    if "restricted" in str(e).lower():
        return True
    return str(e.status() or "") not in ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.UNAVAILABLE",
                                         "StatusCode.CANCELLED")


def _reason(e: Exception) -> str:
    msg = str(e)
    if "restricted" in msg.lower():
        return f"the repository API refused the key: {msg}"
    return msg.strip().splitlines()[0] if msg.strip() else type(e).__name__


def _restore(backup: Path, head_dir: Path) -> None:
    """Put the previous head back (each file replaced atomically: a load reading it sees old or new)."""
    tmp = head_dir / "1" / ".model.onnx.restore"
    shutil.copy2(backup / "1" / "model.onnx", tmp)
    os.replace(tmp, head_dir / "1" / "model.onnx")
    if (backup / repository.SET_FOLDER).is_dir():
        publish(backup / repository.SET_FOLDER, head_dir / repository.SET_FOLDER)
    shutil.rmtree(backup, ignore_errors=True)


def served_set(url: str, prep: dict, timeout: float = 30.0) -> str:
    """The set id the entry model answers with now (one probe of a blank image over gRPC)."""
    client = _client(url)
    try:
        return _probe(client, url, prep, timeout)
    finally:
        client.close()


def wait_for_set(url: str, set_id: str, prep: dict, timeout: float) -> float:
    """Seconds until the entry model answers a probe with `set_id` (the ensemble reloads after the head)."""
    t0 = time.perf_counter()
    client = _client(url)
    try:
        while True:
            try:
                if _probe(client, url, prep, max(1.0, timeout - (time.perf_counter() - t0))) == set_id:
                    return time.perf_counter() - t0
            except SwapError:
                pass  # keep probing until the deadline
            if time.perf_counter() - t0 > timeout:
                raise SwapError(f"the new head {set_id} is loaded and recorded, but the entry model has not "
                                f"answered with it within {timeout:.0f} s; check the server log")
            time.sleep(0.05)
    finally:
        client.close()


def _client(url: str):
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    try:
        return grpc.InferenceServerClient(url)
    except InferenceServerException as e:
        raise SwapError(f"cannot use --url {url}: {_reason(e)} (give HOST:PORT of the gRPC endpoint)") from e


def _probe(client, url: str, prep: dict, timeout: float) -> str:
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    size = int(prep["image_size"])
    x = np.zeros((1, int(prep["channels"]), size, size), np.float32)  # (1, C, H, W)
    inp = grpc.InferInput(F.IMAGES, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        got = client.infer(F.ENTRY_MODEL, [inp], outputs=[grpc.InferRequestedOutput(F.SET_ID)],
                           client_timeout=timeout)
    except InferenceServerException as e:
        raise SwapError(f"no DNC server answers over gRPC at {url} ({_reason(e)}); `dnc swap --url` takes the "
                        "gRPC address (default port 8001)") from e
    return got.as_numpy(F.SET_ID).reshape(-1)[0].decode()
