"""status / down / restart trust a detached topology's state file only if this user wrote it:
a planted one must not say whom to signal or where the console token goes."""

import json
import os

import pytest
import trio

from topology import launch, output, rolling
from topology.output import StateError, read_state, state_dir


@pytest.fixture
def states(tmp_path, monkeypatch):
    monkeypatch.setattr(output, "STATE_DIR", tmp_path / "state")
    return tmp_path / "state"


def plant(directory, name="demo", control_port=1, pid=1) -> str:
    path = state_dir() / f"{name}.json"
    path.write_text(json.dumps({"launcher_pid": pid, "run_dir": str(directory),
                                "control_port": control_port, "nodes": {}}))  # fmt: skip
    path.chmod(0o600)
    return str(path)


def test_this_users_own_state_is_read(states, tmp_path):
    assert read_state("demo") is None
    plant(tmp_path)
    assert read_state("demo")["launcher_pid"] == 1


def test_a_state_file_writable_by_others_is_not_trusted(states, tmp_path):
    os.chmod(plant(tmp_path), 0o666)
    with pytest.raises(StateError, match="writable by others"):
        read_state("demo")


def test_a_symlinked_state_file_is_not_trusted(states, tmp_path):
    target = plant(tmp_path, name="elsewhere")
    os.symlink(target, state_dir() / "demo.json")
    with pytest.raises(StateError, match="not trusted"):
        read_state("demo")


def test_a_state_dir_writable_by_others_is_not_used(states, tmp_path):
    plant(tmp_path)
    states.chmod(0o777)
    with pytest.raises(StateError, match="writable by others"):
        read_state("demo")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user")
def test_another_users_state_is_not_trusted(states, tmp_path):
    path = plant(tmp_path)
    os.chown(path, 65534, 65534)
    with pytest.raises(StateError, match="not a file of this user's"):
        read_state("demo")
    os.chown(path, 0, 0)
    os.chown(states, 65534, 65534)
    with pytest.raises(StateError, match="not a directory of this user's"):
        read_state("demo")


def test_status_down_and_restart_refuse_a_planted_state_in_one_line(states, tmp_path, capsys):
    os.chmod(plant(tmp_path, pid=os.getpid()), 0o646)  # trusted, down would SIGTERM pytest
    assert trio.run(launch.status, "demo") == 1
    assert trio.run(launch.down, "demo") == 1  # and no SIGTERM to the pid it names
    assert trio.run(launch.detach, "x.toml", "demo", None) == 1
    assert trio.run(rolling.restart_detached, "demo") == 1  # no console token sent anywhere
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all("writable by others: not trusted" in line for line in err), err
