"""The on-disk record of a switch under way (apps/pending.py): the files keep the proven state
until the commit, and whatever a crash leaves (mid-check, or mid-commit with some files
already new) is undone to the previous state, with the tried release marked failed."""

import json
from pathlib import Path

import pytest

from dokuen.apps import pending
from dokuen.apps.slots import Target
from dokuen.deploy import releases
from dokuen.errors import DokuenError
from dokuen.store import AppDir
from dokuen.supervise.envdir import read_envdir, write_envdir
from tests.test_releases import built


@pytest.fixture
def app(tmp_path: Path) -> AppDir:
    directory = AppDir(tmp_path / "blog")
    directory.root.mkdir()
    v1 = built(directory, 1)
    built(directory, 2)
    releases.switch_current(directory, v1)
    directory.write_formation({"web": 1})
    write_envdir(directory.env, {"A": "old", "GONE": "later"})
    return directory


def state(app: AppDir) -> tuple[str | None, dict[str, int], dict[str, str]]:
    current = releases.current_release(app)
    return (current.name if current else None, app.read_formation(), read_envdir(app.env))


def v2_target(app: AppDir) -> Target:
    [v2] = [r for r in releases.list_releases(app) if r.name == "v2"]
    return Target(v2, {"web": 2, "worker": 1}, {"A": "new", "ADDED": "1"})


def test_a_commit_writes_the_new_state_and_removes_the_record(app: AppDir) -> None:
    target = v2_target(app)
    pending.begin(app, target.release)
    assert pending.record_file(app).stat().st_mode & 0o777 == 0o600  # it holds config
    assert state(app) == ("v1", {"web": 1}, {"A": "old", "GONE": "later"})  # still proven
    pending.commit(app, target)
    assert state(app) == ("v2", {"web": 2, "worker": 1}, {"A": "new", "ADDED": "1"})
    assert not pending.record_file(app).exists()
    assert pending.undo(app) is None  # nothing to undo
    assert releases.failure(target.release) is None


@pytest.mark.parametrize("done", [0, 1, 2, 3])
def test_a_crash_at_any_step_of_a_commit_is_undone(app: AppDir, done: int) -> None:
    """dokuend killed after ``done`` of the commit's writes (config, formation, current)."""
    target = v2_target(app)
    pending.begin(app, target.release)
    if done >= 1:
        pending.write_config(app, target.config)
    if done >= 2:
        app.write_formation(target.formation)
    if done >= 3:
        releases.switch_current(app, target.release)
    assert pending.undo(app) == "v2"
    assert state(app) == ("v1", {"web": 1}, {"A": "old", "GONE": "later"})
    assert not pending.record_file(app).exists()
    assert releases.failure(target.release) == pending.INTERRUPTED
    assert pending.undo(app) is None


def test_a_first_deploy_interrupted_leaves_no_current_release(tmp_path: Path) -> None:
    app = AppDir(tmp_path / "fresh")
    app.root.mkdir()
    v1 = built(app, 1)
    pending.begin(app, v1)
    releases.switch_current(app, v1)  # the commit got this far
    pending.undo(app, "deploy failed: web.1 exited with code 3 before it answered")
    assert releases.current_release(app) is None
    assert releases.failure(v1) == "deploy failed: web.1 exited with code 3 before it answered"


def test_an_unreadable_record_names_the_file_and_the_fix(app: AppDir) -> None:
    pending.record_file(app).write_text("{not json")
    with pytest.raises(DokuenError) as caught:
        pending.undo(app)
    message = str(caught.value)
    assert message.startswith(f"{pending.record_file(app)}: cannot read the record")
    assert "dokuenctl start blog" in message
    assert state(app)[0] == "v1"


def test_the_record_says_what_was_tried_and_what_was_before(app: AppDir) -> None:
    pending.begin(app, v2_target(app).release)
    record = json.loads(pending.record_file(app).read_text())
    assert record == {
        "release": "v2",
        "previous": {
            "release": "v1",
            "formation": {"web": 1},
            "config": {"A": "old", "GONE": "later"},
            "stopped": False,
        },
    }
