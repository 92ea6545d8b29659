"""``apps:rename OLD NEW`` end to end: behind the installed dokuend's own nginx, everything of
the app follows the new name (its database and backups: test_postgres.py)."""

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BIN, wait_for, write_app
from tests.e2e.test_build import buildpack
from tests.e2e.test_nginx import NGINX, env_via, get, http_port, nginx_dokuen

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (bin/setup installs it)"),
]
WEB = "web: python3 envserver.py\nworker: while true; do echo working as $APP; sleep 0.2; done\n"


def test_a_renamed_app_serves_under_its_new_name_with_everything_it_had(
    tmp_path: Path, apps_dir: Path
) -> None:
    with nginx_dokuen(tmp_path / "home") as dokuen:
        port = http_port(dokuen)
        dokuen.ctl("apps:create", "blog")
        dokuen.ctl("config:set", "blog", "GREETING=hello")
        source = write_app(apps_dir / "blog", WEB)
        (source / ".venv/bin").mkdir(parents=True)  # as the python buildpack makes one
        (source / ".venv/bin/tool").write_text("#!/old/path/python\n")
        dokuen.deploy("blog", source)
        dokuen.ctl("config:set", "blog", "LATER=yes")  # v2
        dokuen.ctl("domains:add", "blog", "blog.example.com")
        dokuen.ctl("ps:scale", "blog", "web=2")
        wait_for(lambda: env_via(port, "blog.localhost"), "blog through nginx")
        old_repo = dokuen.home / "apps/blog/repo.git"
        assert old_repo.is_dir()

        result = dokuen.ctl("apps:rename", "blog", "journal")
        assert result.stdout.splitlines() == [
            f"renamed blog to journal: http://journal.localhost:{port}/",
            "its git remote changed; update yours with:",
            "  git remote set-url dokuen dokuen@HOST:journal   (over ssh)",
            f"  git remote set-url dokuen {dokuen.home / 'apps/journal/repo.git'}   "
            "(on this machine)",
        ]
        assert result.stderr == (
            f"warning: v2 of journal was built under {dokuen.home / 'apps/blog'} and its .venv "
            "names that path (its console scripts fail to start): deploy journal again (git "
            "push, or dokuenctl deploy journal DIR)\n"
        )
        env = wait_for(lambda: env_via(port, "journal.localhost"), "journal through nginx")
        assert (env["APP"], env["GREETING"], env["LATER"]) == ("journal", "hello", "yes")
        assert env["DYNO"].startswith("web.")
        assert Path(env["PWD"]).parent == dokuen.home / "apps/journal/releases"
        assert get(port, "blog.localhost") == (404, "no app answers on this host\n")
        assert env_via(port, "blog.example.com")["APP"] == "journal"  # type: ignore[index]
        assert sorted(r["name"] for r in dokuen.ps("journal")) == ["web.1", "web.2", "worker.1"]
        wait_for(lambda: "journal[worker.1]: working as journal" in dokuen.log(), "new log lines")
        releases = json.loads(dokuen.ctl("releases", "journal", "--json").stdout)
        assert [(r["version"], r["description"]) for r in releases] == [
            ("v2", "Set LATER config vars"),
            ("v1", "Deploy"),
        ]
        assert json.loads(dokuen.ctl("config", "journal", "--json").stdout) == {
            "GREETING": "hello",
            "LATER": "yes",
        }
        assert dokuen.ctl("domains", "journal").stdout.split() == [
            "journal.localhost",
            "blog.example.com",
        ]
        assert not old_repo.exists()
        assert (dokuen.home / "apps/journal/repo.git/hooks/pre-receive").is_file()
        gone = dokuen.ctl("ps", "blog", check=False)
        assert (gone.returncode, gone.stderr.startswith("error: no app named 'blog'")) == (1, True)
        assert "journal[dokuen]: renamed from blog" in dokuen.log()
        # A rollback after the rename runs the kept slug under the new name.
        dokuen.ctl("rollback", "journal", "v1")

        def rolled_back() -> dict[str, Any] | None:
            env = env_via(port, "journal.localhost")
            return env if env is not None and "LATER" not in env else None

        env = wait_for(rolled_back, "journal v3 (v1's config) through nginx")
        assert env["APP"] == "journal"
        # The old name is free again, for a new app.
        dokuen.ctl("apps:create", "blog")
        assert get(port, "blog.localhost") == (503, "blog has no running web process\n")


def test_a_rename_is_refused_with_the_reason(tmp_path: Path, apps_dir: Path) -> None:
    with nginx_dokuen(tmp_path / "home") as dokuen:
        dokuen.ctl("apps:create", "shop")
        dokuen.deploy("blog", write_app(apps_dir / "blog", WEB))
        cases = {
            "shop": "error: app 'shop' already exists (pick another name)\n",
            "blog": "error: blog is already named blog\n",
        }
        for new, message in cases.items():
            refused = dokuen.ctl("apps:rename", "blog", new, check=False)
            assert (refused.returncode, refused.stderr) == (1, message), new
        bad = dokuen.ctl("apps:rename", "blog", "Bad_Name", check=False)
        assert bad.returncode == 2
        assert "invalid app name 'Bad_Name'" in bad.stderr
        reserved = dokuen.ctl("apps:rename", "blog", "nginx", check=False)
        assert reserved.returncode == 2
        assert "app name 'nginx' is reserved for the platform" in reserved.stderr
        assert dokuen.ctl("apps:rename", "nope", "other", check=False).returncode == 1
        # While a build runs, the rename waits for nobody: it is refused, the build goes on.
        gate = tmp_path / "gate"
        pack = buildpack(
            tmp_path / "slow", f'while [ ! -e {gate} ]; do sleep 0.05; done\necho "web: x"\n'
        )
        dokuen.ctl("config:set", "blog", f"BUILDPACK_URL={pack}")
        with subprocess.Popen(
            [str(BIN / "dokuenctl"), "deploy", "blog", str(apps_dir / "blog")],
            env=dokuen.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as deploy:
            wait_for(lambda: "build of v3 started" in dokuen.log(), "the build to start")
            during = dokuen.ctl("apps:rename", "blog", "journal", check=False)
            gate.touch()
            deploy.wait(timeout=60)
        assert during.returncode == 1
        assert during.stderr == (
            "error: blog is building a release; run apps:rename again once the deploy has "
            "finished\n"
        )
        assert (dokuen.home / "apps/blog").is_dir()
        assert not (dokuen.home / "apps/journal").exists()
        assert json.loads(dokuen.ctl("apps:info", "blog", "--json").stdout)["name"] == "blog"
