"""Reruns of a video job into the same --out: videos done by the same model with the class list it serves
now are skipped; those made with another list (a swap since, or a swap mid-video: two lists in one
video's evidence) or by another model are redone, saying why; a served model is known by its name, not
the address it was reached at; a summary that cannot be read or is ill-formed redoes its video instead of
stopping the job; --overwrite redoes everything."""

import json

import pytest

from dnc.clients.cli import main
from dnc.clients.video_job import LocalSegmenter, collect_videos, run_job
from dnc.clients.video_outputs import pending_videos, wanted
from dnc.core import centroid_set, video
from dnc.training.scenes import write_clips

pytestmark = pytest.mark.slow
FRAMES = 8
KINDS = ("masks.mkv", "overlay.mp4", "evidence.jsonl", "summary.json")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, fmnist_ready):
    root = tmp_path_factory.mktemp("rerun-clips") / "clips"
    write_clips(root, 2, "fine", height=48, width=64, frames=FRAMES, fps=10, seed=6)
    return root / "videos"


def _times(out):
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_a_rerun_redoes_what_another_list_made(clips, seg_export, other_seg_set, tmp_path, capsys):
    first, second = centroid_set.load(seg_export[2]).set_id, centroid_set.load(other_seg_set).set_id
    out = tmp_path / "out"
    args = ["segment", str(clips), "--out", str(out), "--in-process", str(seg_export[2]), "--threads", "1"]
    assert main(args) == 0
    s = json.loads((out / "clip000.summary.json").read_text())
    assert s["set_ids"] == [first] and s["model"] == {"export": str(seg_export[2].resolve()), "centroids": None}
    capsys.readouterr()
    before = _times(out)
    assert main(args) == 0  # same model, same list: nothing is redone
    assert "2 already done" in capsys.readouterr().out and _times(out) == before

    assert main([*args, "--centroids", str(other_seg_set)]) == 0  # the list changed (as after `dnc swap`)
    text = capsys.readouterr().out
    assert "2 segmented, 0 already done" in text
    for name in ("clip000", "clip001"):
        assert f"redo {clips / (name + '.mp4')}: made with list {first}, now {second}" in text
        s = json.loads((out / f"{name}.summary.json").read_text())
        assert s["set_ids"] == [second] and s["model"]["centroids"] == str(other_seg_set.resolve())
    assert main([*args, "--centroids", str(other_seg_set)]) == 0
    assert "2 already done" in capsys.readouterr().out

    before = _times(out)
    assert main([*args, "--centroids", str(other_seg_set), "--overwrite"]) == 0
    text = capsys.readouterr().out
    assert "2 segmented, 0 already done" in text and f"redo {clips / 'clip001.mp4'}: --overwrite" in text
    assert all(_times(out)[n] > t for n, t in before.items())
    assert sorted(p.name for p in out.iterdir()) == sorted(f"clip00{i}.{k}" for i in range(2) for k in KINDS)


class _Swapping(LocalSegmenter):
    """The export's own list for the first `after` requests, then `other` (what it reports serving): a swap
    in the middle of a video, in-process."""

    def __init__(self, export, other, after: int):
        super().__init__(export, other, threads=1)
        self.before, self.calls, self.after = LocalSegmenter(export, threads=1), 0, after

    def segment(self, frames):
        self.calls += 1
        return self.before.segment(frames) if self.calls <= self.after else super().segment(frames)


def test_a_video_made_across_a_swap_is_redone(clips, seg_export, other_seg_set, tmp_path):
    first, second = centroid_set.load(seg_export[2]).set_id, centroid_set.load(other_seg_set).set_id
    videos, out = collect_videos([clips])[:1], tmp_path / "out"
    s = run_job(videos, out, _Swapping(seg_export[2], other_seg_set, after=2), batch_size=2, concurrency=1)
    made = s["per_video"][str(videos[0])]
    assert made["set_ids"] == sorted([first, second]) and made["class_lists"] == {first: 4, second: FRAMES - 4}
    now = LocalSegmenter(seg_export[2], other_seg_set, threads=1)
    again = run_job(videos, out, now, batch_size=4, concurrency=1)
    assert again["redone"] == {str(videos[0]): f"made with lists {', '.join(sorted([first, second]))} (a swap "
                                                f"mid-video), now {second}"}
    assert again["per_video"][str(videos[0])]["class_lists"] == {second: FRAMES}
    lines = [json.loads(line) for line in (out / "clip000.evidence.jsonl").read_text().splitlines()]
    assert {line["set_id"] for line in lines} == {second} and len(list(video.masks(out / "clip000.masks.mkv"))) == 8
    assert run_job(videos, out, now)["skipped"] == [str(videos[0])]


def test_a_served_model_is_known_by_its_name_not_its_address(clips, seg_export, tmp_path):
    """A server run records the served name and the URL; a rerun compares the name and the set ids only (the
    set id pins the class list and embedding), so http on localhost then gRPC on 127.0.0.1 skips the video,
    and another served name redoes it. (A real summary, its model rewritten as a server run records it.)"""
    videos, out = collect_videos([clips])[:1], tmp_path / "out"
    made = run_job(videos, out, LocalSegmenter(seg_export[2], threads=1))["per_video"][str(videos[0])]
    path = out / "clip000.summary.json"
    path.write_text(json.dumps(made | {"model": {"served": "scenes", "url": "localhost:8000"}}))
    want = {"model": {"served": "scenes", "url": "127.0.0.1:8001"}, "set_ids": made["set_ids"],
            "sampling": made["sampling"], "accept_short": False}
    assert pending_videos(videos, out, want) == ([], videos, {})
    assert json.loads(path.read_text())["model"]["url"] == "localhost:8000"  # kept, for information
    other = want | {"model": {"served": "scenes-b", "url": "localhost:8000"}}
    assert pending_videos(videos, out, other) == (videos, [], {
        str(videos[0]): "made by scenes at localhost:8000, now scenes-b at localhost:8000"})


@pytest.mark.parametrize(("text", "why"), [
    ("[1, 2]", "its summary is a list, not a JSON object"),
    ('"done"', "its summary is a string, not a JSON object"),
    ("null", "its summary is null, not a JSON object"),
    ('{"set_ids": "abc"}', "its summary's 'set_ids' is a string, not a list"),
    ('{"set_ids": [1]}', "its summary's 'set_ids' are not all strings"),
    ('{"model": ["x"]}', "its summary's 'model' is a list, not a JSON object"),
    ("{not json", "its summary cannot be read (JSONDecodeError: "),
    (b"\xff\xfe", "its summary cannot be read (UnicodeDecodeError: "),
])
def test_an_ill_formed_summary_is_not_done(clips, seg_export, tmp_path, text, why):
    videos, out = collect_videos([clips])[:1], tmp_path / "out"
    seg = LocalSegmenter(seg_export[2], threads=1)
    run_job(videos, out, seg)
    path = out / "clip000.summary.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    todo, done, redo = pending_videos(videos, out, wanted(seg))
    assert (todo, done, list(redo)) == (videos, [], [str(videos[0])]) and redo[str(videos[0])].startswith(why)


def test_a_job_redoes_videos_whose_summaries_are_not_objects(clips, seg_export, tmp_path, capsys):
    """Summaries that are valid JSON but not objects: the job redoes those videos, saying why, and ends well."""
    out = tmp_path / "out"
    args = ["segment", str(clips), "--out", str(out), "--in-process", str(seg_export[2]), "--threads", "1"]
    assert main(args) == 0
    (out / "clip000.summary.json").write_text("[]")
    (out / "clip001.summary.json").write_text('"done"')
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "2 segmented, 0 already done, 0 failed" in text
    assert f"redo {clips / 'clip000.mp4'}: its summary is a list, not a JSON object" in text
    assert f"redo {clips / 'clip001.mp4'}: its summary is a string, not a JSON object" in text
    assert all(isinstance(json.loads((out / f"clip00{i}.summary.json").read_text()), dict) for i in range(2))
