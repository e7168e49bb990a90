"""Folders the server runs from are its user's own: a run folder or repository prepared by another user
(`nobody`, through setpriv) in a world-writable folder is refused by the real commands, naming it; a
repository others may write is refused with the fix; a link planted as the server's log is never written
through; a run folder is created 0700."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from dnc.clients.cli import main
from dnc.serving import repository
from dnc.serving.own_folder import FolderError
from dnc.serving.server import TritonServer

pytestmark = [pytest.mark.triton, pytest.mark.slow]


def _as_nobody(argv: list[str]) -> None:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*prefix, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv], check=True,
                   timeout=60)


@pytest.fixture
def shared():
    """A folder like /tmp: everyone may create entries in it (sticky); outside pytest's 0700 folders, which
    `nobody` could not reach."""
    base = Path(tempfile.mkdtemp(prefix="dnc-shared-"))
    base.chmod(0o755)
    folder = base / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(base, ignore_errors=True)


def test_a_run_folder_another_user_made_first_is_refused(shared, exported, capsys):
    repository.build(exported[0], shared / "repo")
    _as_nobody(["mkdir", str(shared / ".repo.server")])  # before `dnc serve`: its predictable name
    assert main(["serve", "--repo", str(shared / "repo"), "--http-port", "0", "--grpc-port", "0",
                 "--metrics-port", "0", "--detach"]) == 2
    err = capsys.readouterr().err
    assert f"the run folder {shared / '.repo.server'} belongs to user id" in err and "not to the user serving" in err
    assert not list((shared / ".repo.server").iterdir())  # nothing written into it


def test_a_repository_another_user_prepared_is_refused(shared, exported, capsys):
    _as_nobody(["mkdir", str(shared / "theirs")])
    _as_nobody(["cp", str(Path(repository.__file__).parents[1] / "model_repository" / "README.md"),
                str(shared / "theirs" / "README.md")])
    assert main(["repo", "build", str(exported[0]), "--repo", str(shared / "theirs")]) == 2
    assert f"the repository {shared / 'theirs'} belongs to user id" in capsys.readouterr().err
    assert sorted(p.name for p in (shared / "theirs").iterdir()) == ["README.md"]


def test_a_repository_others_may_write_is_refused_with_the_fix(tmp_path, exported, capsys):
    repo = tmp_path / "repo"
    repository.build(exported[0], repo)
    head = repo / "dnc_head" / "1" / "model.py"
    head.chmod(0o666)
    assert main(["serve", "--repo", str(repo), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                 "--detach"]) == 2
    assert f"may be written by other users (mode 0666); make it yours alone: chmod go-w {head}" in \
        capsys.readouterr().err
    head.chmod(0o644)
    link = repo / "dnc_head" / "1" / "extra.py"
    link.symlink_to(tmp_path / "elsewhere.py")
    assert main(["repo", "build", str(exported[0]), "--repo", str(repo)]) == 2
    assert "extra.py in the repository" in capsys.readouterr().err


def test_the_server_log_is_never_written_through_a_link(tmp_path, exported):
    repo = tmp_path / "repo"
    repository.build(exported[0], repo)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    (run / "tritonserver.log").symlink_to(victim)
    server = TritonServer(repo, 0, 0, 0, run_dir=run)
    try:
        with pytest.raises(FolderError, match="never writes through a link"):
            server.start(timeout=60)
    finally:
        server.stop()
    assert victim.read_text() == "keep\n"


def test_a_run_folder_is_created_for_its_user_alone(tmp_path):
    from dnc.serving.own_folder import run_folder

    made = run_folder(tmp_path / ".repo.server")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    (tmp_path / "old").mkdir(mode=0o755)  # as an older version left it
    assert stat.S_IMODE(run_folder(tmp_path / "old").stat().st_mode) == 0o700
    (tmp_path / "link").symlink_to(tmp_path / "old")
    with pytest.raises(FolderError, match="is a symbolic link"):
        run_folder(tmp_path / "link")
