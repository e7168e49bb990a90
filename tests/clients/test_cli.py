"""The dnc command: one-line errors naming the culprit, exit code 2, and a real (tiny) run."""

import json

import numpy as np
import pytest
from PIL import Image

from dnc.clients import classify_cli
from dnc.clients.cli import build_parser, main
from dnc.clients.flags import flagged, option_flags
from dnc.core.errors import DNCError


class Refused(DNCError):
    """A project error that is no ValueError: caught for being a DNCError, not for its built-in base."""


def test_errors_with_a_cause_outside_the_code_print_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["classify", str(tmp_path / "empty")]) == 2  # core.images.DataError, through the real command
    err = capsys.readouterr().err
    assert err.startswith("dnc classify: error: no image files") and err.count("\n") == 1, err
    assert main(["classify", str(tmp_path / "missing.png")]) == 2  # a file the user named is missing (OSError)
    err = capsys.readouterr().err
    assert err == f"dnc classify: error: no such file or folder: {tmp_path / 'missing.png'}\n"


@pytest.mark.parametrize("error", [Refused("the server said no"), KeyError("top"), TypeError("bad call")])
def test_the_dispatcher_prints_project_errors_and_lets_bugs_keep_their_traceback(error, monkeypatch, capsys):
    """A DNCError raised by a command is one line and exit 2; anything else (here KeyError, TypeError: a bug)
    leaves main() with its traceback."""
    def command(a):
        raise error

    monkeypatch.setattr(classify_cli, "cmd_classify", command)
    if isinstance(error, DNCError):
        assert main(["classify", "x.png"]) == 2
        assert capsys.readouterr().err == "dnc classify: error: the server said no\n"
    else:
        with pytest.raises(type(error)):
            main(["classify", "x.png"])
        assert "error:" not in capsys.readouterr().err


def test_library_messages_show_the_running_commands_options_as_flags(tmp_path, capsys):
    """The library names its parameters (DNCClient: "`url` is empty"); `dnc classify` shows them as its flags."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    assert main(["classify", str(tmp_path / "a.png"), "--url", " "]) == 2
    assert capsys.readouterr().err == ("dnc classify: error: --url is empty: give the server's HOST:PORT, or leave "
                                       "--url out for localhost:8000\n")
    assert main(["segment", str(tmp_path / "a.png"), "--out", str(tmp_path / "a.png"), "--input", "encoded"]) == 2
    assert capsys.readouterr().err == f"dnc segment: error: --out {tmp_path / 'a.png'} is a file, not a folder\n"


def test_flag_mapping_names_only_the_options_of_the_running_subcommand():
    parser = build_parser()
    argv = ["-v", "repo", "build", "EXPORT", "--repo", "R"]
    flags = option_flags(parser, parser.parse_args(argv), argv)
    assert flags["repo"] == "--repo" and flags["verbose"] == "-v"  # nested subcommand; the spelling typed
    assert "help" not in flags and "http_port" not in flags  # `dnc serve --http-port`: another command's
    text = "`repo` R is busy: stop that server (`dnc stop`, `repo` R) or change `http_port`"
    assert flagged(text, flags) == "--repo R is busy: stop that server (`dnc stop`, --repo R) or change `http_port`"
    argv = ["serve", "--repo", "R", "--http-port", "5"]
    assert option_flags(parser, parser.parse_args(argv), argv)["http_port"] == "--http-port"
    argv = ["classify", "x.png", "--input", "encoded"]
    assert option_flags(parser, parser.parse_args(argv), argv)["how"] == "--input"  # dest differs from the flag


def test_unknown_dataset_path(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "error: data set path does not exist" in err and "nope" in err


@pytest.mark.parametrize("k", ["0", "4,-1", "x"])
def test_bad_k_is_refused(k, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--K", k])
    assert e.value.code == 2
    assert "--K" in capsys.readouterr().err


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.slow
def test_train_stop_resume_eval_anchor(tmp_path, capsys, fmnist_ready):
    out = tmp_path / "run"
    common = ["--width", "8", "--embed-dim", "16", "--batch-size", "64", "--train-limit", "512",
              "--test-limit", "256", "--workers", "0", "--epochs", "2"]
    # 8 steps per epoch: stop mid-way through epoch 2.
    assert main(["train", "--out", str(out), "--max-steps", "12", *common]) == 0
    assert "stopped at step 12" in capsys.readouterr().out
    # Resume with no other flags: the checkpoint's folder, batch size and schedule; runs to the end.
    resume = ["train", "--resume", str(out / "checkpoint.safetensors")]
    assert main([*resume, "--embed-dim", "32"]) == 2
    assert "embedding width mismatch on resume: checkpoint has 16, requested 32" in capsys.readouterr().err
    assert main([*resume, "--K", "2"]) == 2
    assert "k mismatch on resume: checkpoint has 4, requested 2" in capsys.readouterr().err
    assert main([*resume, "--batch-size", "32"]) == 2
    assert "batch_size mismatch on resume: checkpoint has 64, requested 32" in capsys.readouterr().err
    assert main([*resume, "--anchor"]) == 0
    printed = capsys.readouterr().out
    assert "test top-1" in printed and "anchored top-1" in printed
    side = json.loads((out / "checkpoint.json").read_text())
    assert side["epoch"] == 2 and side["step"] == 16 and len(side["history"]) == 2
    assert side["train_config"]["batch_size"] == 64
    assert main(["eval", "--checkpoint", str(out / "anchored.safetensors"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 10000 and 0 <= res["top1"] <= 100
    assert main(["train", "--resume", str(out / "anchored.safetensors")]) == 2
    assert "not a resumable training checkpoint" in capsys.readouterr().err


def test_the_dnc_command_starts_without_torch_onnx_or_onnxruntime():
    """Building the whole parser (every layer's commands, defaults and help) imports none of the heavy
    libraries: `dnc classify`, `dnc segment` and `dnc swap` start in a fraction of a second, and need only
    what the client uses."""
    import subprocess
    import sys

    code = ("import sys; from dnc.clients.cli import build_parser; build_parser().parse_args(['classify', 'x.png']); "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_model_a_client_uses_when_none_is_named():
    """The choice of `dnc classify`/`dnc segment` without --model, from what a server serves (the served
    side is tested against tritonserver in tests/serving)."""
    from dnc.clients.client import ClientError, choose_model, served_text

    both = {"dnc": "classification", "scenes": "segmentation"}
    assert choose_model(both, "segmentation", "u") == "scenes" and choose_model(both, "classification", "u") == "dnc"
    assert choose_model({"a": "classification", "dnc": "classification"}, "classification", "u") == "dnc"
    with pytest.raises(ClientError, match="^several segmenters are served at u: a, b; pass `model`$"):
        choose_model({"a": "segmentation", "b": "segmentation", "dnc": "classification"}, "segmentation", "u")
    with pytest.raises(ClientError, match="^no segmenter is served at u; served classifiers: dnc, x$"):
        choose_model({"dnc": "classification", "x": "classification"}, "segmentation", "u")
    with pytest.raises(ClientError, match="no classifier is served at u .are its models still loading"):
        choose_model({}, "classification", "u")
    assert served_text(both, None, "u") == "served DNC models: dnc, scenes"


def test_status_of_a_folder_that_is_not_a_repository(tmp_path, capsys):
    assert main(["status", "--repo", str(tmp_path / "nope")]) == 2
    assert f"--repo {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.pbtxt").write_text("")
    assert main(["status", "--repo", str(tmp_path / "plain")]) == 2
    assert "is not a built DNC model repository (no repository.json): run `dnc repo build`" in capsys.readouterr().err
    assert main(["status", "--repo", str(tmp_path / "plain" / "config.pbtxt")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_long_class_lists_are_abbreviated():
    from dnc.serving.status import abbreviate, short_fingerprint

    assert abbreviate(["a", "b"]) == "a, b"
    names = [f"class-{i}" for i in range(40)]
    text = abbreviate(names)
    assert text.startswith("class-0, class-1") and text.endswith("(+31 more)") and len(text) <= 100
    assert short_fingerprint("sha256:" + "ab" * 32) == "sha256:abababababab"
