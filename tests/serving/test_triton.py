"""The real tritonserver (from the nvidia-pytriton wheel) on free ports, serving a repository built from a
small trained export: HTTP and gRPC against in-process onnxruntime, evidence, bad requests, refused swaps,
a swap under continuous load with zero failed requests, and a stop that leaves no process behind."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from dnc.clients.cli import main
from dnc.clients.client import ClientError, DNCClient, collect_images
from dnc.core import centroid_set
from dnc.core import formats as F
from dnc.export import runtime
from dnc.serving import repository
from dnc.serving.processes import group_processes
from dnc.serving.server import GRPC_LOCK_HEADER, LOCK_HEADER, TritonServer
from dnc.serving.swap import SwapError, swap

pytestmark = [pytest.mark.triton, pytest.mark.slow]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, exported):
    out = tmp_path_factory.mktemp("served") / "repo"
    repository.build(exported[0], out, top_k=3, threads=1)
    return out


def _images(fm_folder, client, n=20):
    files = collect_images([fm_folder / "test"])[::5][:n]
    return files, client.read(files)


def _reference(exported_dir, repo, x):
    """In-process onnxruntime on the repository's own graphs."""
    emb = runtime.session(exported_dir / F.EMBED_FILE, 1).run([F.EMBEDDING], {F.IMAGES: x})[0]
    head = runtime.session(repo / F.HEAD_MODEL / "1" / "model.onnx", 1)
    return dict(zip([F.SCORES, F.TOPK_LABEL], head.run([F.SCORES, F.TOPK_LABEL], {F.EMBEDDING: emb}), strict=True))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_scores_match_onnxruntime(server, repo, exported, fm_folder, protocol):
    url = server.http_url if protocol == "http" else server.grpc_url
    with DNCClient(url, protocol) as c:
        files, x = _images(fm_folder, c)
        out = c.infer(x)
        preds = c.classify(x, top_k=3, sources=[str(f) for f in files])
    ref = _reference(exported[0], repo, x)
    assert np.abs(out[F.SCORES] - ref[F.SCORES]).max() < 1e-4
    assert [p.label for p in preds] == [r[0].decode() if isinstance(r[0], bytes) else r[0] for r in ref[F.TOPK_LABEL]]
    names = repository.model_info(repo)["set"]["class_names"]
    for p, s in zip(preds, out[F.SCORES], strict=True):
        assert p.set_id == repository.model_info(repo)["set"]["set_id"] and len(p.top) == 3
        assert [r.label for r in p.top] == [names[r.class_id] for r in p.top]
        assert p.top[0].class_id == int(s.argmax()) and abs(p.top[0].score - s.max()) < 1e-5
        assert abs(p.margin - (p.top[0].score - p.top[1].score)) < 1e-5
    accuracy = np.mean([Path(p.source).parent.name == p.label.replace("/", "-") for p in preds])
    assert accuracy >= 0.5  # a model trained for 2 short epochs, on real test images


def _raw(server, x, dtype="FP32"):
    c = http.InferenceServerClient(server.http_url)
    inp = http.InferInput(F.IMAGES, list(x.shape), dtype)
    inp.set_data_from_numpy(x, binary_data=True)
    return c.infer(F.ENTRY_MODEL, [inp])


@pytest.mark.parametrize(("what", "x", "dtype", "says"), [
    ("wrong dtype", np.zeros((2, 1, 28, 28), np.float64), "FP64", "data-type"),
    ("wrong shape", np.zeros((2, 1, 28, 27), np.float32), "FP32", "shape"),
    ("NaN pixels", np.where(np.arange(2 * 784).reshape(2, 1, 28, 28) == 900, np.nan, 0).astype(np.float32), "FP32",
     "image 1 of the request holds NaN"),
    ("empty batch", np.zeros((0, 1, 28, 28), np.float32), "FP32", "byte size mismatch for input 'images'"),
    ("batch too large", np.zeros((65, 1, 28, 28), np.float32), "FP32", "batch-size must be <= 64"),
])
def test_bad_requests_get_errors_and_server_stays_up(server, what, x, dtype, says):
    with pytest.raises(InferenceServerException) as e:
        _raw(server, x, dtype)
    assert says in str(e.value), f"{what}: {e.value}"
    good = _raw(server, np.zeros((1, 1, 28, 28), np.float32))
    assert good.as_numpy(F.SCORES).shape[0] == 1 and server.proc.poll() is None


def _head_files(repo):
    head = repo / F.HEAD_MODEL
    return {p.relative_to(head): p.read_bytes() for p in sorted(head.rglob("*")) if p.is_file()}


def test_nothing_over_the_network_changes_what_is_served(server, repo):
    """Load/unload, shared memory, logging and tracing are locked for every client: no header value opens
    them (the lock's value is a newline, which no request can carry), and there is no key to steal."""
    served = repository.model_info(repo)["set"]["set_id"]
    grpc_client = grpc.InferenceServerClient(server.grpc_url)
    http_client = http.InferenceServerClient(server.http_url)
    for value in (None, "", " ", "\\n", "x"):
        for client, name in ((grpc_client, GRPC_LOCK_HEADER), (http_client, LOCK_HEADER)):
            headers = {} if value is None else {name: value}
            for call in (lambda c, h: c.unload_model(F.HEAD_MODEL, headers=h),
                         lambda c, h: c.load_model(F.HEAD_MODEL, headers=h,
                                                   config=json.dumps(repository.head_config(repo)),
                                                   files={"file:1/model.py": b"raise SystemExit"}),
                         lambda c, h: c.update_log_settings({"log_verbose_level": 1}, headers=h),
                         lambda c, h: c.register_system_shared_memory("x", "/x", 8, headers=h)):
                with pytest.raises(InferenceServerException, match="restricted"):
                    call(client, headers)
    assert grpc_client.is_model_ready(F.HEAD_MODEL)
    assert _raw(server, np.zeros((1, 1, 28, 28), np.float32)).as_numpy(F.SET_ID)[0, 0].decode() == served
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode()
    assert "key" not in cmdline.lower() and f"{LOCK_HEADER}=\n" in cmdline


def test_a_head_that_fails_to_load_leaves_the_old_list(server, repo, other_set, monkeypatch):
    """The new head graph is written but Triton cannot load it: the swap reads the failure in the server
    log, puts the old files back, and the old list is still what answers."""
    before = repository.model_info(repo)["set"]["set_id"]
    files = _head_files(repo)
    real = repository.head_bytes
    monkeypatch.setattr(repository, "head_bytes", lambda cs, top_k: real(cs, top_k)[:-100])  # truncated graph
    with pytest.raises(SwapError, match=f"did not load the new head.*old head is back.*class list {before} is serving"):
        swap(repo, other_set, server.grpc_url, timeout=60, log_file=server.log_file)
    assert _head_files(repo) == files and repository.model_info(repo)["set"]["set_id"] == before
    assert _raw(server, np.zeros((1, 1, 28, 28), np.float32)).as_numpy(F.SET_ID)[0, 0].decode() == before


def test_swap_needs_the_server_of_the_repository(server, repo, other_set):
    with pytest.raises(SwapError, match="no DNC model 'dnc' answers over gRPC at 127.0.0.1:1"):
        swap(repo, other_set, "127.0.0.1:1")


def test_swap_of_another_models_set_is_refused(server, repo, other_set, tmp_path):
    cs = centroid_set.load(other_set)
    cs.embed_fingerprint = "sha256:" + "2" * 64
    centroid_set.save(cs, tmp_path / "foreign")
    before = repository.model_info(repo)["set"]["set_id"]
    head = (repo / F.HEAD_MODEL / "1" / "model.onnx").read_bytes()
    with pytest.raises(centroid_set.CentroidSetError, match="embedding model"):
        swap(repo, tmp_path / "foreign", server.grpc_url)
    assert (repo / F.HEAD_MODEL / "1" / "model.onnx").read_bytes() == head
    assert _raw(server, np.zeros((1, 1, 28, 28), np.float32)).as_numpy(F.SET_ID)[0, 0].decode() == before


def test_swap_under_load_fails_no_request(server, repo, exported, other_set, fm_folder):
    """Four client threads (HTTP and gRPC) send requests while the class list is swapped there and back:
    no request fails, every response's labels belong to the class list its set id names."""
    first = centroid_set.load(exported[0])
    second = centroid_set.load(other_set)
    names = {first.set_id: first.class_names, second.set_id: second.class_names}
    with DNCClient(server.http_url) as c:
        _, x = _images(fm_folder, c, n=8)
    stop, failures, seen, lock = threading.Event(), [], [], threading.Lock()

    def load(protocol):
        with DNCClient(server.http_url if protocol == "http" else server.grpc_url, protocol) as c:
            while not stop.is_set():
                try:
                    preds = c.classify(x, top_k=2)
                except Exception as e:  # any failure counts, not only the client's own errors
                    with lock:
                        failures.append(repr(e))
                    continue
                ids = {p.set_id for p in preds}
                ok = len(ids) == 1 and all(p.set_id in names and all(r.label == names[p.set_id][r.class_id]
                                                                     for r in p.top) for p in preds)
                with lock:
                    seen.append((ids.pop() if len(ids) == 1 else None, ok))

    threads = [threading.Thread(target=load, args=(p,)) for p in ("http", "grpc", "http", "grpc")]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        swaps = [swap(repo, s, server.grpc_url) for s in (other_set, exported[0], other_set)]
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert len(seen) > 30  # requests answered before, between and after the swaps
    assert all(ok for _, ok in seen) and {s for s, _ in seen} == set(names)  # one list per response
    assert [s["to"] for s in swaps] == [second.set_id, first.set_id, second.set_id]
    with DNCClient(server.grpc_url, "grpc") as c:
        after = c.classify(x, top_k=4)
    assert {p.set_id for p in after} == {second.set_id}
    assert {p.label for p in after} <= set(second.class_names) and len(after[0].top) == 3  # top_k 3 caps it
    assert repository.model_info(repo)["set"]["set_id"] == second.set_id


def test_classify_command(server, fm_folder, capsys, tmp_path):
    assert main(["classify", str(fm_folder / "test" / "Bag"), "--url", server.grpc_url, "--protocol", "grpc",
                 "--json", "--top-k", "2"]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 10 and '"set_id"' in lines[0]
    assert "dnc classify: using the served classifier 'dnc'" in err  # the one classifier served
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "good.png").symlink_to(next((fm_folder / "test" / "Bag").iterdir()))
    from PIL import Image

    Image.new("L", (3000, 10)).save(folder / "thin.png")
    assert main(["classify", str(folder), "--url", server.http_url]) == 1  # the good file answered, then exit 1
    out, err = capsys.readouterr()
    assert "good.png" in out and "1 image(s)" in out
    assert "skipped" in err and "broken.png" in err and "thin.png" in err and "aspect ratio" in err
    assert "2 of 3 file(s) could not be read" in err
    assert main(["classify", str(folder / "good.png"), "--url", ""]) == 2
    assert "--url is empty" in capsys.readouterr().err
    # a server with a classifier only: `dnc segment` says so and names what is served
    assert main(["segment", str(folder / "good.png"), "--out", str(tmp_path / "seg"), "--url", server.http_url]) == 2
    assert f"no segmenter is served at {server.http_url}; served classifiers: dnc" in capsys.readouterr().err


def test_stop_leaves_no_process(repo):
    s = TritonServer(repo, 0, 0, 0).start(timeout=180)
    pid = s.proc.pid
    assert len(group_processes(pid)) >= 2  # the server and its python-backend stubs
    s.stop()
    assert group_processes(pid) == []


def test_client_errors_name_the_problem(server, tmp_path):
    with pytest.raises(ClientError, match="no Triton server answers at 127.0.0.1:1"):
        DNCClient("127.0.0.1:1")
    with pytest.raises(ClientError, match="no Triton server answers"):
        DNCClient("127.0.0.1:1", "grpc")
    with pytest.raises(ClientError, match="model 'nope' is not ready"):
        DNCClient(server.http_url, model="nope")


def test_any_image_size_rgb_or_gray(server, tmp_path):
    """A large RGB photo-like image and a small gray one are resized and converted as the manifest says."""
    from PIL import Image

    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8), "RGB").save(tmp_path / "big.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L").save(tmp_path / "small.png")
    with DNCClient(server.http_url) as c:
        preds = c.classify_files([tmp_path], top_k=2)
        x = c.read([tmp_path / "big.jpg"])
    assert [Path(p.source).name for p in preds] == ["big.jpg", "small.png"]
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32


def test_serve_command_stops_cleanly_on_ctrl_c(repo):
    """`dnc serve` as a user runs it: ready, its state file written (no secret in it), Ctrl-C stops the server
    and its python-backend processes; `--detach` then `dnc stop` does the same."""
    import os
    import signal
    import subprocess
    import sys

    from dnc.serving.state import read_state, stop_detached

    cmd = [sys.executable, "-m", "dnc.clients.cli", "serve", "--repo", str(repo), "--http-port", "0",
           "--grpc-port", "0", "--metrics-port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while read_state(repo) is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        state = read_state(repo)
        assert state is not None, proc.stdout.read() if proc.poll() is not None else "no state file"
        assert "key" not in state and state["supervisor"] == proc.pid
        assert DNCClient(state["http"]).max_batch == 64
        pid = state["pid"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        stop_detached(repo)  # a failed run leaves no server behind
    assert group_processes(pid) == [] and read_state(repo) is None
    assert main(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                 "--detach"]) == 0
    pid = read_state(repo)["pid"]
    assert os.getpgid(pid) == pid and main(["stop", "--repo", str(repo)]) == 0
    assert group_processes(pid) == [] and read_state(repo) is None


def test_a_stale_record_is_reconciled_from_the_head_on_disk(server, repo, exported, other_set):
    """A swap interrupted after writing the head leaves repository.json naming the old list while the
    server loads the new head from disk: the next swap records what answers instead of refusing."""
    target = other_set if repository.model_info(repo)["set"]["set_id"] != centroid_set.load(other_set).set_id \
        else exported[0]
    new_id = centroid_set.load(target).set_id
    assert swap(repo, target, server.grpc_url)["to"] == new_id
    info = repository.model_info(repo)
    repository.record_model(repo, info["name"], dict(info, set=dict(info["set"], set_id="0" * 16)))
    back = exported[0] if target == other_set else other_set
    assert swap(repo, back, server.grpc_url)["from"] == new_id


def test_urls_with_a_scheme_are_refused_in_one_line(server, capsys):
    assert main(["classify", str(Path(__file__)), "--url", f"http://{server.http_url}"]) == 2
    assert "without a scheme" in capsys.readouterr().err


def test_stop_cleans_up_after_a_supervisor_and_server_killed_without_notice(repo, exported):
    """kill -9 of `dnc serve`'s supervisor and of tritonserver leaves python stubs and shared memory behind:
    `dnc stop` finds them from the state file and removes them all."""
    import os
    import signal

    from dnc.serving.processes import region_dir
    from dnc.serving.state import read_state

    assert main(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                 "--detach"]) == 0
    state = read_state(repo)
    with pytest.raises(ValueError, match="is being served"):
        repository.build(exported[0], repo)
    regions = list(region_dir(state["pid"], state["private_shm"]).glob(f"{state['shm_prefix']}*"))
    assert regions, "the python backend's shared memory carries the server's prefix"
    stub = group_processes(state["pid"])[-1]  # its stubs hold the server's private /dev/shm after it dies
    os.kill(state["supervisor"], signal.SIGKILL)
    os.kill(state["pid"], signal.SIGKILL)
    time.sleep(1.0)
    left = group_processes(state["pid"])
    assert left, "nothing left to clean: the case is moot"
    assert list(region_dir(stub, state["private_shm"]).glob(f"{state['shm_prefix']}*"))  # regions kept alive
    assert main(["stop", "--repo", str(repo)]) == 0
    assert group_processes(state["pid"]) == [] and read_state(repo) is None
    assert not any(r.exists() for r in regions) and not region_dir(stub, state["private_shm"]).exists()


def test_one_supervisor_per_repository(repo, capsys):
    """A second `dnc serve` on a repository whose supervisor is still starting (no state file yet) is
    refused by the supervisor's lock, before it starts anything."""
    import fcntl

    run_dir = repo.resolve().with_name(f".{repo.resolve().name}.server")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "serve.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0",
                     "--metrics-port", "0"]) == 2
    assert "another `dnc serve` is starting or running" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["encoded", "pixels"])
def test_deep_and_turned_pictures_are_answered_as_their_upright_8_bit_twins(server, tmp_path, how):
    """A 16-bit gray PNG and EXIF-turned pictures, sent as their bytes (decoded by the server's prep step) or
    as pixels (read by the client), score as their 8-bit upright twins do."""
    from PIL import Image

    from dnc.core.preprocess import EXIF_ORIENTATION

    rng = np.random.default_rng(7)
    deep = rng.integers(0, 65536, (40, 36), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "a-deep.png")
    Image.fromarray(np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)).save(tmp_path / "a-twin.png")
    upright = rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(upright).save(tmp_path / "b-twin.png")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored turned a quarter left; viewers turn it back right (ROTATE_270)
    Image.fromarray(np.rot90(upright, 1)).save(tmp_path / "b-turned.png", exif=exif)
    with DNCClient(server.http_url) as c:
        got = {Path(p.source).stem: p for p in c.classify_files([tmp_path], top_k=3, how=how)}
    for a, b in (("a-deep", "a-twin"), ("b-turned", "b-twin")):
        assert [x.label for x in got[a].top] == [x.label for x in got[b].top], (a, how)
        assert np.allclose([x.score for x in got[a].top], [x.score for x in got[b].top], atol=1e-5), (a, how)


def test_an_edited_set_is_swapped_in_and_answers_its_new_class(server, repo, exported, fm_folder, tmp_path):
    """`dnc centroids --from` the served list, one class replaced by another from 20 of its images: `dnc
    swap` serves it like any set, the new class answers for its own test images, and the untouched classes
    answer as before (issue 25, item 2)."""
    from dnc.export.edit_set import edit_set

    served = repository.model_info(repo)["set"]["set_id"]
    base = exported[0]  # the export folder holds the checkpoint's set
    if centroid_set.load(base).set_id != served:
        swap(repo, base, server.grpc_url)
    few = tmp_path / "few-sandals"
    few.mkdir()
    for f in sorted((fm_folder / "train" / "Sandal").iterdir())[:20]:
        (few / f.name).symlink_to(f)
    edit_set(base, exported[0] / F.EMBED_FILE, tmp_path / "edited", add={"Sandal2": str(few)}, remove=["Sandal"],
             threads=2)
    edited = centroid_set.load(tmp_path / "edited")
    tests = sorted((fm_folder / "test" / "Sandal").iterdir())[:10] + sorted((fm_folder / "test" / "Bag").iterdir())[:10]
    with DNCClient(server.http_url) as c:
        before = {p.source: p.label for p in c.classify_files(tests)}
        assert swap(repo, tmp_path / "edited", server.grpc_url)["to"] == edited.set_id
        after = c.classify_files(tests)
    try:
        assert {p.set_id for p in after} == {edited.set_id}
        # every other class's scores are unchanged: an answer is the old one unless it was Sandal or is Sandal2
        assert all(p.label == before[p.source] for p in after if "Sandal" not in (before[p.source], p.label[:6]))
        sandals = [p for p in after if "/Sandal/" in p.source]
        assert sum(p.label == "Sandal2" for p in sandals) >= sum(before[p.source] == "Sandal" for p in sandals) - 2
    finally:
        swap(repo, base, server.grpc_url)


def test_requests_in_flight_answer_as_one_at_a_time(server, fm_folder, tmp_path, capsys):
    """classify_files with several requests in flight (each on its own connection) answers every file, in the
    order of the files, as one request at a time does; unreadable files are still skipped and named."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i, f in enumerate(sorted((fm_folder / "test").rglob("*.png"))[::4][:22]):
        (folder / f"{i:02d}.png").write_bytes(f.read_bytes())
    (folder / "10b.png").write_bytes(b"not a png")
    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        with DNCClient(url, protocol) as c:
            skipped_one, skipped = [], []
            one = c.classify_files([folder], top_k=2, batch_size=3, skipped=skipped_one)
            many = c.classify_files([folder], top_k=2, batch_size=3, concurrency=3, skipped=skipped)
            assert 1 < len(c._clients) <= 4  # the requests went out on connections of their own
            again = c.classify_files([folder], top_k=2, batch_size=3, concurrency=3, skipped=[])
            assert len(c._clients) <= 4 and [p.source for p in again] == [p.source for p in many]  # threads reused
        assert [p.source for p in many] == [p.source for p in one] == sorted(str(f) for f in folder.iterdir()
                                                                              if f.name != "10b.png")
        assert [(p.label, p.top[0].score) for p in many] == [(p.label, p.top[0].score) for p in one]
        assert [Path(s).name for s, _ in skipped] == [Path(s).name for s, _ in skipped_one] == ["10b.png"]
    assert main(["classify", str(folder), "--url", server.http_url, "--concurrency", "0"]) == 2
    assert "--top-k and --concurrency must be >= 1, got 1 and 0" in capsys.readouterr().err
