"""Config changes are releases and a rollback restores code and config, as on Heroku: end to
end through the installed dokuend and dokuenctl, with real processes (and nginx where a
health check decides)."""

import json
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Dokuen, get_json, wait_for, write_app
from tests.e2e.test_build import restarted
from tests.e2e.test_nginx import NGINX, env_via, http_port, nginx_dokuen

pytestmark = pytest.mark.e2e

WEB = "web: python3 envserver.py\n"


def listing(dokuen: Dokuen, app: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(dokuen.ctl("releases", app, "--json").stdout)
    return rows


def serving_env(dokuen: Dokuen, app: str, release: str) -> dict[str, Any]:
    """The environment of the app's web.1 once the ``current`` release is ``release``."""

    def check() -> dict[str, Any] | None:
        current = [r for r in listing(dokuen, app) if r["current"]]
        rows = dokuen.running(app, 1)
        if not rows or not current or current[0]["version"] != release:
            return None
        try:
            env: dict[str, Any] = get_json(rows[0]["port"])
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return env

    return wait_for(check, f"{app} {release} to answer")


def test_a_config_change_is_a_release_that_runs_the_same_slug(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB, {"data.txt": "built once\n"}))
    serving_env(dokuen, "blog", "v1")
    releases_dir = dokuen.home / "apps/blog/releases"
    built = {p.name: p.stat().st_ino for p in (releases_dir / "v1").iterdir()}
    set_ = dokuen.ctl("config:set", "blog", "FOO=1", "BAR=two words")
    assert set_.stdout == "set FOO, BAR on blog in release v2; its processes restarted\n"
    env = serving_env(dokuen, "blog", "v2")
    assert (env["FOO"], env["BAR"], Path(env["PWD"]).name) == ("1", "two words", "v1")
    # No build and no copy: v2 is a record that names v1's slug, whose files are untouched.
    assert not (releases_dir / "v2").exists()
    assert {p.name: p.stat().st_ino for p in (releases_dir / "v1").iterdir()} == built
    record = json.loads((releases_dir / "v2.json").read_text())
    assert (record["slug"], record["description"]) == ("v1", "Set FOO, BAR config vars")
    assert record["config"] == {"FOO": "1", "BAR": "two words"}
    assert (releases_dir / "v2.json").stat().st_mode & 0o777 == 0o600  # it holds secrets
    dokuen.ctl("config:unset", "blog", "FOO")
    env = serving_env(dokuen, "blog", "v3")
    assert "FOO" not in env
    rows = listing(dokuen, "blog")
    assert [(r["version"], r["slug"], r["description"], r["current"]) for r in rows] == [
        ("v3", "v1", "Remove FOO config vars", True),
        ("v2", "v1", "Set FOO, BAR config vars", False),
        ("v1", "v1", "Deploy", False),
    ]
    table = dokuen.ctl("releases", "blog").stdout.splitlines()
    assert table[0].split()[:2] == ["RELEASE", "DESCRIPTION"]
    assert table[2].split()[0] == "v2"
    assert "  Set FOO, BAR config vars  " in table[2]
    info = dokuen.ctl("releases:info", "blog", "v2").stdout.splitlines()
    assert "description Set FOO, BAR config vars" in info
    assert "slug        v1" in info
    assert json.loads(dokuen.ctl("releases:info", "blog", "v3", "--json").stdout)[
        "config_keys"
    ] == ["BAR"]
    output = dokuen.ctl("releases:output", "blog", "v2", check=False)
    assert output.returncode == 1
    assert "v2 of blog was not built (Set FOO, BAR config vars): it runs v1's slug" in (
        output.stderr
    )
    # An app never deployed just changes its config: no release.
    dokuen.ctl("apps:create", "fresh")
    fresh = dokuen.ctl("config:set", "fresh", "A=1").stdout
    assert fresh.startswith("set A on fresh (no process of fresh runs now")
    assert listing(dokuen, "fresh") == []
    assert list((dokuen.home / "apps/fresh/releases").iterdir()) == []


def test_rollback_restores_the_code_and_config_of_the_release(
    dokuen: Dokuen, apps_dir: Path
) -> None:
    dokuen.ctl("apps:create", "blog")
    dokuen.ctl("config:set", "blog", "GREETING=old")  # before any release: none is made
    dokuen.deploy("blog", write_app(apps_dir / "one", WEB))
    dokuen.ctl("config:set", "blog", "GREETING=new", "LATER=added")
    env = serving_env(dokuen, "blog", "v2")
    assert (env["GREETING"], env["LATER"]) == ("new", "added")
    result = dokuen.ctl("rollback", "blog")  # the release before the current: v1
    assert "-----> Rolled back to v1 as v3" in result.stdout
    env = serving_env(dokuen, "blog", "v3")
    assert env["GREETING"] == "old"  # changed since: restored
    assert "LATER" not in env  # added since: gone from the process environment
    assert json.loads(dokuen.ctl("config", "blog", "--json").stdout) == {"GREETING": "old"}
    assert not (dokuen.home / "apps/blog/env/LATER").exists()
    assert listing(dokuen, "blog")[0]["description"] == "Rollback to v1"
    # A new build, then back to v2: v2's code (v1's slug) and v2's config.
    dokuen.deploy("blog", write_app(apps_dir / "two", WEB + "worker: exec sleep 1000\n"))
    wait_for(lambda: dokuen.running("blog", 2), "v4: web and worker")
    dokuen.ctl("rollback", "blog", "v2")
    wait_for(lambda: dokuen.running("blog", 1), "v5: web only, as v2")
    env = serving_env(dokuen, "blog", "v5")
    assert (env["GREETING"], env["LATER"], Path(env["PWD"]).name) == ("new", "added", "v1")
    assert [r["description"] for r in listing(dokuen, "blog")] == [
        "Rollback to v2",
        "Deploy",
        "Rollback to v1",
        "Set GREETING, LATER config vars",
        "Deploy",
    ]


def test_releases_made_by_0_1_keep_working(dokuen: Dokuen, apps_dir: Path) -> None:
    """A record without description or slug (as 0.1 wrote them) is a build of its own."""
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB))
    dokuen.deploy("blog", write_app(apps_dir / "blog", WEB))
    for name in ("v1.json", "v2.json"):
        record_file = dokuen.home / "apps/blog/releases" / name
        record = json.loads(record_file.read_text())
        del record["description"], record["slug"]
        record_file.write_text(json.dumps(record))
    assert [r["description"] for r in listing(dokuen, "blog")] == ["Deploy", "Deploy"]
    dokuen.ctl("rollback", "blog")
    env = serving_env(dokuen, "blog", "v3")
    assert Path(env["PWD"]).name == "v1"


def test_pruning_keeps_every_slug_a_kept_release_runs_from(dokuen: Dokuen, apps_dir: Path) -> None:
    restarted(dokuen, DOKUEN_KEEP_RELEASES="2")
    releases_dir = dokuen.home / "apps/blog/releases"
    source = write_app(apps_dir / "blog", WEB)
    dokuen.deploy("blog", source)  # v1
    dokuen.ctl("config:set", "blog", "A=1")  # v2 runs v1
    dokuen.ctl("config:set", "blog", "A=2")  # v3 runs v1; v1's record goes, its slug stays
    assert [(r["version"], r["slug"]) for r in listing(dokuen, "blog")] == [
        ("v3", "v1"),
        ("v2", "v1"),
    ]
    assert (releases_dir / "v1").is_dir()
    assert not (releases_dir / "v1.json").exists()
    env = serving_env(dokuen, "blog", "v3")
    assert (env["A"], Path(env["PWD"]).name) == ("2", "v1")
    # A build under way (a vN/ without a record) is never touched, and no number repeats.
    under_way = releases_dir / "v9"
    under_way.mkdir()
    (under_way / "half-built").write_text("x")
    dokuen.ctl("config:set", "blog", "A=3")
    assert listing(dokuen, "blog")[0]["version"] == "v10"
    assert (under_way / "half-built").exists()
    dokuen.deploy("blog", source)  # v11 (its own slug); v10 still runs v1
    assert not under_way.exists()  # the next build clears what an unfinished one left
    assert [(r["version"], r["slug"]) for r in listing(dokuen, "blog")] == [
        ("v11", "v11"),
        ("v10", "v1"),
    ]
    assert (releases_dir / "v1").is_dir()
    dokuen.ctl("config:set", "blog", "A=4")  # v12 runs v11: nothing kept runs v1 now
    assert [(r["version"], r["slug"]) for r in listing(dokuen, "blog")] == [
        ("v12", "v11"),
        ("v11", "v11"),
    ]
    assert sorted(p.name for p in releases_dir.iterdir()) == [
        "v11",
        "v11.json",
        "v11.log",
        "v12.json",
    ]
    dokuen.ctl("rollback", "blog", "v11")  # v13 runs v11: v11's record goes, not its slug
    env = serving_env(dokuen, "blog", "v13")
    assert (env["A"], Path(env["PWD"]).name) == ("3", "v11")
    assert [r["version"] for r in listing(dokuen, "blog")] == ["v13", "v12"]
    assert (releases_dir / "v11").is_dir()
    assert not (releases_dir / "v11.json").exists()


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (bin/setup installs it)")
def test_a_config_change_whose_processes_fail_leaves_the_old_release_and_config(
    tmp_path: Path, apps_dir: Path
) -> None:
    procfile = 'web: test -z "$BREAK" && exec python3 envserver.py; echo broken; exec sleep 1000\n'
    with nginx_dokuen(tmp_path / "home") as proxied:
        port = http_port(proxied)
        proxied.ctl("apps:create", "blog")
        proxied.ctl("config:set", "blog", "DOKUEN_BOOT_TIMEOUT=1.5", "KEPT=yes")
        proxied.deploy("blog", write_app(apps_dir / "blog", procfile))
        before = wait_for(lambda: env_via(port, "blog.localhost"), "v1 through nginx")
        result = proxied.ctl("config:set", "blog", "BREAK=1", "KEPT=no", check=False)
        assert result.returncode == 1
        assert "config change of v2 failed: web.1 of the new processes did not answer" in (
            result.stderr
        )
        assert "the old ones keep serving. Its last lines:\n    broken" in result.stderr
        after = env_via(port, "blog.localhost")
        assert after is not None
        assert (after["DYNO"], after["KEPT"], after.get("BREAK")) == ("web.1", "yes", None)
        assert after["PORT"] == before["PORT"]  # the very process that served before
        assert json.loads(proxied.ctl("config", "blog", "--json").stdout) == {
            "DOKUEN_BOOT_TIMEOUT": "1.5",
            "KEPT": "yes",
        }
        # v2 is kept, marked failed (with the reason), never current.
        rows = listing(proxied, "blog")
        assert [(r["version"], r["current"], bool(r["failed"])) for r in rows] == [
            ("v2", False, True),
            ("v1", True, False),
        ]
        assert rows[0]["failed"].startswith("config change failed: web.1 of the new processes")
        assert proxied.ctl("releases", "blog").stdout.splitlines()[1].rstrip().endswith("failed")
        assert (proxied.home / "apps/blog/current").readlink().name == "v1"
        assert not (proxied.home / "apps/blog/pending.json").exists()
        proxied.ctl("config:set", "blog", "KEPT=still")  # the next one works, as v3
        wait_for(
            lambda: (env_via(port, "blog.localhost") or {}).get("KEPT") == "still",
            "v3 through nginx",
        )
        assert listing(proxied, "blog")[0]["version"] == "v3"
        # rollback goes to the newest release before v3 that booted: v1, not the failed v2;
        # an explicit rollback to v2 is refused with the reason unless --force.
        refused = proxied.ctl("rollback", "blog", "v2", check=False)
        assert refused.returncode == 1
        assert "v2 of blog failed to boot (config change failed: web.1" in refused.stderr
        assert "dokuenctl rollback blog v2 --force" in refused.stderr
        assert "-----> Rolled back to v1 as v4" in proxied.ctl("rollback", "blog").stdout
