# ruff: noqa: F811 (the fixtures repo and server are imported from test_segment_serving and used as arguments)
"""`dnc status`, the served segmenter chosen by task, and a server killed and restarted during an image run,
against the real tritonserver serving a classifier and a segmenter side by side (the fixtures of
test_segment_serving.py, started again for this module)."""

import json
import threading
import time

import pytest
from PIL import Image

from dnc.clients.cli import main
from dnc.serving import repository
from tests.serving.test_segment_serving import SEG, repo, write_scenes_pixels  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def test_a_server_killed_and_restarted_during_an_image_run_loses_no_picture(server, tmp_path, capsys, caplog):
    """`dnc segment` on 160 pictures, the tritonserver killed (SIGKILL) once some are written and started
    again: the requests that failed are retried once it is back, every picture is written once, exit 0."""
    import os
    import signal

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    base = write_scenes_pixels()
    for i in range(160):
        Image.fromarray(base[i % len(base)]).resize((192, 160)).save(folder / f"p{i:03d}.png")
    seen: dict[str, float] = {}

    def crash_and_restart():
        deadline = time.monotonic() + 120
        while len(list(out.glob("*.evidence.json"))) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["before"] = len(list(out.glob("*.evidence.json")))
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        t0 = time.monotonic()
        server.stop()  # the stubs and shared memory of the killed server
        server.start(timeout=180)
        seen["down_s"] = time.monotonic() - t0

    restarter = threading.Thread(target=crash_and_restart)
    restarter.start()
    try:
        status = main(["segment", str(folder), "--out", str(out), "--model", SEG, "--url", server.http_url,
                       "--batch-size", "4"])
    finally:
        restarter.join()
    err = capsys.readouterr().err
    assert status == 0, (seen, err[-3000:])
    assert seen["before"] < 160 and any("retrying in" in r.getMessage() for r in caplog.records), seen
    assert f"dnc segment: 160 written, 0 skipped as done, 0 failed of 160 picture(s); outputs in {out}" in err
    assert len(list(out.glob("*.evidence.json"))) == len(list(out.glob("*.labels.png"))) == 160
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert main(["segment", str(folder), "--out", str(out), "--model", SEG, "--url", server.grpc_url, "--protocol",
                 "grpc"]) == 0  # the rerun asks the server its class list: all done with it
    assert "0 written, 160 skipped as done (same source and class list" in capsys.readouterr().err


def test_status_lists_models_server_and_health(server, repo, capsys):
    """`dnc status` on the repository of a running server: both models with task, runtime, class list and
    fingerprint, the server from its state file, the set id each model answers with; exit 1 when a
    recorded server does not answer or answers with another list than repository.json records."""
    from dnc.serving.state import STATE_FILE, remove_state, write_state

    info = repository.read_info(repo)["models"]
    write_state(server)  # the record `dnc serve` keeps (this fixture's server)
    try:
        assert main(["status", "--repo", str(repo)]) == 0
        out = capsys.readouterr().out
        for name, task in (("dnc", "classifier"), (SEG, "segmenter")):
            m = info[name]
            assert f"  {name}: {task}, python runtime, embedding {m['embed_fingerprint'][:19]} (D={m['dim']})" in out
            anchored = "anchored to exemplars" if m["set"]["anchored"] else "not anchored"
            assert f"class list {m['set']['set_id']}: {m['set']['num_classes']} classes, {anchored}: " in out
            assert f"served: ready, answering with {m['set']['set_id']}" in out
        assert "T-shirt-top, Trouser" in out and f"gRPC {server.grpc_url}" in out and "health: live, ready" in out
        assert main(["status", "--repo", str(repo), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["healthy"] and report["problems"] == [] and report["server"]["pid"] == server.proc.pid
        assert report["server"]["started"] and report["server"]["running"]
        assert {n: m["task"] for n, m in report["models"].items()} == {"dnc": "classification", SEG: "segmentation"}
        assert all(report["health"]["models"][n]["set_id"] == info[n]["set"]["set_id"] for n in info)
        # the served list differs from the recorded one (an interrupted swap): said, exit 1
        seg = repository.model_info(repo, SEG)
        repository.record_model(repo, SEG, dict(seg, set=dict(seg["set"], set_id="0" * 16)))
        try:
            assert main(["status", "--repo", str(repo)]) == 1
            got = capsys.readouterr()
            assert f"(repository.json records {'0' * 16})" in got.out
            assert f"model {SEG} answers with class list {seg['set']['set_id']}, but" in got.err
        finally:
            repository.record_model(repo, SEG, seg)
        # a server recorded, running, but not answering at its recorded address: said, exit 1
        state = json.loads((repo / STATE_FILE).read_text())
        (repo / STATE_FILE).write_text(json.dumps(dict(state, grpc="127.0.0.1:1")))
        assert main(["status", "--repo", str(repo)]) == 1
        assert f"(pid {server.proc.pid}) runs but does not answer at 127.0.0.1:1" in capsys.readouterr().err
        # --url asks that server instead of the recorded one
        assert main(["status", "--repo", str(repo), "--url", server.grpc_url]) == 0
        capsys.readouterr()
    finally:
        remove_state(repo)
    assert main(["status", "--repo", str(repo)]) == 0  # nothing recorded: listed, not served, nothing asked
    out = capsys.readouterr().out
    assert "server: none recorded" in out and "health: not served" in out and "served: ready" not in out


def test_several_segmenters_served_need_a_model_name(server, repo, seg_export, tmp_path, capsys):
    """With two segmenters served (none named dnc), `dnc segment` without --model names both; with one
    named, it runs. (Last in this module: the other tests choose the one segmenter.)"""
    repository.build(seg_export[2], repo, name="scenes-b", threads=1)
    server.wait_ready(120, "scenes-b")
    Image.fromarray(write_scenes_pixels()[0]).save(tmp_path / "p.png")
    args = ["segment", str(tmp_path / "p.png"), "--out", str(tmp_path / "out"), "--url", server.http_url]
    assert main(args) == 2
    assert (f"several segmenters are served at {server.http_url}: {SEG}, scenes-b; pass --model"
            in capsys.readouterr().err)
    assert main([*args, "--model", "scenes-b"]) == 0
    assert "using the served" not in capsys.readouterr().err
