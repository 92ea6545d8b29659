"""Release records on disk (deploy/releases.py): which slug each release runs from, version
numbers that never repeat, and pruning that keeps every slug a kept release needs."""

import json
from pathlib import Path

import pytest

from dokuen.deploy import releases
from dokuen.store import AppDir
from dokuen.supervise.procfile import Procfile


@pytest.mark.parametrize(
    ("changed", "removed", "description"),
    [
        (["FOO"], [], "Set FOO config vars"),
        (["FOO", "BAR"], [], "Set FOO, BAR config vars"),
        ([], ["FOO"], "Remove FOO config vars"),
        (["A"], ["B", "C"], "Set A config vars and remove B, C config vars"),
    ],
)
def test_config_descriptions_are_herokus(
    changed: list[str], removed: list[str], description: str
) -> None:
    assert releases.config_description(changed, removed) == description


def test_deploy_descriptions_name_the_short_commit() -> None:
    assert releases.deploy_description("1a2b3c4d5e6f" + "0" * 28) == "Deploy 1a2b3c4"
    assert releases.deploy_description(None) == "Deploy"


def built(app: AppDir, version: int, **record: object) -> releases.Release:
    """A built release vN as make_release leaves it (``record`` overrides keys)."""
    release = releases.Release(version, app.releases / f"v{version}")
    release.path.mkdir(parents=True)
    (release.path / "app.py").write_text(f"v{version}\n")
    base = {
        "version": version,
        "description": "Deploy",
        "slug": f"v{version}",
        "process_types": {"web": "./web", "release": "./migrate"},
        "config": {"A": str(version)},
        "build_seconds": 1.0,
    }
    releases.finish_release(release, {**base, **record})
    release.log_file.write_text("built\n")
    return release


def names(app: AppDir) -> list[str]:
    return sorted(p.name for p in app.releases.iterdir())


def test_a_derived_release_names_its_slug_and_copies_no_file(tmp_path: Path) -> None:
    app = AppDir(tmp_path / "blog")
    v1 = built(app, 1)
    v2 = releases.derived_release(app, v1, {"B": "x"}, "Set B config vars")
    assert (v2.name, v2.path, v2.directory.exists()) == ("v2", v1.path, False)
    record = v2.record()
    assert (record["slug"], record["config"], record["description"]) == (
        "v1",
        {"B": "x"},
        "Set B config vars",
    )
    assert list(record["process_types"]) == ["web", "release"]  # the Procfile's order
    assert "build_seconds" not in record
    assert releases.list_releases(app) == [v1, v2]
    releases.switch_current(app, v2)
    assert releases.current_release(app) == v2
    assert releases.current_release(app).path == v1.path  # type: ignore[union-attr]
    releases.discard(v2)  # a failed switch: the record goes, never the slug it ran from
    assert names(app) == ["v1", "v1.json", "v1.log"]


def test_a_record_made_by_0_1_is_a_build_of_its_own(tmp_path: Path) -> None:
    app = AppDir(tmp_path / "blog")
    old = releases.Release(1, app.releases / "v1")
    old.path.mkdir(parents=True)
    releases.finish_release(old, {"version": 1, "commit": "ab" * 20, "process_types": {"a": "b"}})
    (listed,) = releases.list_releases(app)
    assert (listed.path, listed.description) == (old.path, "Deploy abababa")


def test_versions_never_repeat_and_a_build_under_way_is_never_touched(tmp_path: Path) -> None:
    app = AppDir(tmp_path / "blog")
    v1 = built(app, 1)
    (app.releases / "v7").mkdir()  # a build under way: no record yet
    v8 = releases.derived_release(app, v1, {}, "Set X config vars")
    assert v8.name == "v8"
    assert releases.prune(app, 1) == [v1]
    assert (app.releases / "v7").is_dir()
    assert names(app) == ["v1", "v1.pruned", "v7", "v8.json"]  # v1's slug: v8 runs it
    assert releases.next_version(app) == 9


def test_pruning_keeps_every_slug_a_kept_release_runs_from(tmp_path: Path) -> None:
    app = AppDir(tmp_path / "blog")
    v1 = built(app, 1)
    v2 = releases.derived_release(app, v1, {}, "Set A config vars")
    v3 = built(app, 3)
    v4 = releases.derived_release(app, v1, {}, "Rollback to v1")
    releases.switch_current(app, v4)
    assert releases.prune(app, 2) == [v1, v2]
    assert names(app) == ["v1", "v1.pruned", "v3", "v3.json", "v3.log", "v4.json"]
    v5 = built(app, 5)
    releases.switch_current(app, v5)
    assert releases.prune(app, 2) == [v3]  # v4 still runs v1's slug: it stays
    assert names(app) == ["v1", "v1.pruned", "v4.json", "v5", "v5.json", "v5.log"]
    v6 = releases.derived_release(app, v5, {}, "Set B config vars")
    releases.switch_current(app, v6)
    assert releases.prune(app, 2) == [v4]  # nothing kept runs v1 now: its slug goes
    assert names(app) == ["v5", "v5.json", "v5.log", "v6.json"]
    assert releases.list_releases(app) == [v5, v6]


def test_the_current_release_is_never_pruned(tmp_path: Path) -> None:
    app = AppDir(tmp_path / "blog")
    v1 = built(app, 1)
    built(app, 2)
    built(app, 3)
    releases.switch_current(app, v1)
    releases.prune(app, 1)
    assert [r.name for r in releases.list_releases(app)] == ["v1", "v3"]
    assert json.loads(v1.record_file.read_text())["slug"] == "v1"


def test_the_current_procfile_is_read_once_a_release_and_follows_the_pointer(
    tmp_path: Path,
) -> None:
    app = AppDir(tmp_path / "blog")
    cache: dict[str, Procfile] = {}
    assert releases.current_procfile(app, cache) is None
    v1 = built(app, 1)
    v2 = built(app, 2, process_types={"worker": "./work"})

    def types() -> tuple[str, ...]:
        procfile = releases.current_procfile(app, cache)
        assert procfile is not None
        return procfile.types

    releases.switch_current(app, v1)
    assert types() == ("web", "release")
    v1.record_file.write_text("{not json")  # a release never changes: not read again
    assert types() == ("web", "release")
    releases.switch_current(app, v2)  # a new pointer: the new release is read
    assert types() == ("worker",)
    assert len(cache) == 1
