"""The bundled Python and Node buildpacks end to end: real apps deployed through dokuend,
installed for real from PyPI and the npm registry (tiny packages), and their processes
asked what they run with."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Dokuen, free_port_block, get_json, wait_for, write_app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APPS = Path(__file__).parent / "apps"
PYTHON_313 = Path("/root/.pyenv/versions/3.13.0/bin")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The web process tells what it runs with: its Python, whether six (a main dependency) and
# iniconfig (a dev dependency, never installed) can be imported.
FACTS = """\
#!/bin/sh
FACTS="$(python -c 'import sys, importlib.util as u
print(sys.version.split()[0], *(u.find_spec(m) is not None for m in ("six", "iniconfig")))')"
export FACTS
exec python envserver.py
"""


def python_app(directory: Path, lock: str | None = None, **files: str) -> Path:
    """An app that reports its FACTS, from the lock fixture ``lock`` (tests/e2e/apps)."""
    if lock is not None:
        shutil.copytree(APPS / lock, directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "web.sh").write_text(FACTS)
    return write_app(directory, "web: sh web.sh\n", files)


def timed_step(title: str, output: str) -> bool:
    """The build printed step ``title`` with its time: ``-----> TITLE (0.4s)``, or, for a
    step that took over 3 s and streamed, ``-----> TITLE`` and later ``(took 3.2s)``."""
    at_once = re.search(rf"^-----> {re.escape(title)} \(\d+\.\ds\)$", output, re.M)
    streamed = re.search(
        rf"^-----> {re.escape(title)}$.*?^ +\(took \d+\.\ds\)$", output, re.M | re.S
    )
    return bool(at_once or streamed)


def facts(dokuen: Dokuen, app: str) -> list[str]:
    """What the app's one web process says (asked again while a deploy's switch finishes)."""

    def ask() -> list[str] | None:
        rows = dokuen.running(app, 1)
        try:
            env: dict[str, Any] = get_json(rows[0]["port"]) if rows else {}
        except OSError:
            return None
        return str(env["FACTS"]).split() if env else None

    return wait_for(ask, f"the web process of {app}")


def test_pipenv_poetry_and_uv_apps_install_their_locked_main_dependencies(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    pipenv = dokuen.deploy("pipenv", python_app(tmp_path / "pipenv", "pipenv"))
    assert "-----> Python app detected" in pipenv.stdout
    assert "Exported Pipfile.lock to 1 pinned requirements" in pipenv.stdout
    assert timed_step("Installing dependencies from Pipfile.lock with uv", pipenv.stdout)
    assert facts(dokuen, "pipenv")[1:] == ["True", "False"]

    poetry = dokuen.deploy("poetry", python_app(tmp_path / "poetry", "poetry"))
    assert timed_step("Installing dependencies from poetry.lock with uv", poetry.stdout)
    assert facts(dokuen, "poetry")[1:] == ["True", "False"]  # package-mode = false: no `.`

    uvapp = dokuen.deploy("uvapp", python_app(tmp_path / "uvlock", "uvlock"))
    assert timed_step("Installing dependencies from uv.lock with uv sync --frozen", uvapp.stdout)
    assert facts(dokuen, "uvapp")[1:] == ["True", "False"]


def test_a_lock_that_is_missing_or_a_pin_that_cannot_be_met_fails_naming_the_file(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    source = python_app(tmp_path / "src", **{"requirements.txt": "six==1.17.0\n"})
    dokuen.deploy("pins", source)
    serving = facts(dokuen, "pins")

    (source / ".python-version").write_text("3.99\n")
    failed = dokuen.deploy_result("pins", source)
    assert failed.returncode != 0
    assert ".python-version asks for Python 3.99, but this build can run only: 3." in failed.stdout
    assert "Change .python-version" in failed.stdout
    assert facts(dokuen, "pins") == serving  # the running release still serves

    pipfile = tmp_path / "pipfile-only"
    pipfile.mkdir()
    (pipfile / "Pipfile").write_text('[packages]\nsix = "*"\n')
    failed = dokuen.deploy_result("pipfile", python_app(pipfile))
    assert failed.returncode != 0
    assert "Pipfile has no Pipfile.lock beside it: run `pipenv lock`" in failed.stdout


@pytest.mark.skipif(not PYTHON_313.is_dir(), reason="needs a Python 3.13 outside the build PATH")
def test_python_version_picks_an_interpreter_on_the_build_path(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    dokuen.terminate()
    dokuen.extra_env["DOKUEN_APP_PATH"] = f"{PYTHON_313}:{DEFAULT_PATH}"
    dokuen.start()
    source = python_app(tmp_path / "src", **{"requirements.txt": "six==1.17.0\n"})
    (source / ".python-version").write_text("3.13\n")
    result = dokuen.deploy("py313", source)
    assert "-----> Using Python 3.13.0" in result.stdout
    assert facts(dokuen, "py313")[0] == "3.13.0"
    (source / ".python-version").unlink()
    (source / "runtime.txt").write_text("python-3.11\n")
    result = dokuen.deploy("py313", source)
    assert "as runtime.txt asks" in result.stdout
    assert facts(dokuen, "py313")[0].startswith("3.11.")


def test_a_warm_redeploy_installs_nothing_and_a_changed_lock_installs_again(
    dokuen: Dokuen, tmp_path: Path
) -> None:
    source = python_app(tmp_path / "src", **{"requirements.txt": "six==1.17.0\n"})
    cold = dokuen.deploy("warm", source)
    assert "Installed 1 package" in cold.stdout
    warm = dokuen.deploy("warm", source)
    assert "-----> Reusing the virtualenv from the build cache" in warm.stdout
    assert "Nothing to install: requirements.txt is unchanged" in warm.stdout
    assert "Installed" not in warm.stdout
    assert facts(dokuen, "warm")[1:] == ["True", "False"]
    # v2 runs from its own copy: v1's virtualenv can go and v2 still imports six.
    v2 = dokuen.home / "apps/warm/releases/v2/.venv"
    assert (v2 / "pyvenv.cfg").is_file()
    # No file is shared (hard linked) with v1 or with the build cache, which later builds
    # write: each is a copy.
    others = (
        dokuen.home / "apps/warm/releases/v1/.venv",
        dokuen.home / "apps/warm/cache/python/venv",
    )
    found = list(v2.rglob("six.py"))
    assert found
    for path in found:
        assert path.stat().st_nlink == 1
        for other in others:
            assert not os.path.samefile(path, other / path.relative_to(v2))
    (source / "requirements.txt").write_text("six==1.17.0\niniconfig==2.3.1\n")
    changed = dokuen.deploy("warm", source)
    assert "Reusing" not in changed.stdout
    assert "Installed 2 packages" in changed.stdout
    assert facts(dokuen, "warm")[1:] == ["True", "True"]


def test_a_django_app_has_its_admin_css(dokuen: Dokuen, tmp_path: Path) -> None:
    source = tmp_path / "django"
    shutil.copytree(APPS / "django", source)  # a Django 5.2 project with whitenoise
    result = dokuen.deploy("django", source)
    assert timed_step(
        "Running Django's collectstatic (manage.py collectstatic --noinput)", result.stdout
    )
    assert "static files copied to" in result.stdout
    wait_for(lambda: _status(dokuen, "django", "/static/admin/css/base.css") == 200, "the CSS")
    (web,) = dokuen.running("django", 1) or []
    url = f"http://127.0.0.1:{web['port']}/static/admin/css/base.css"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert b"body" in response.read()
    assert _status(dokuen, "django", "/static/admin/css/nothing-here.css") == 404

    dokuen.ctl("config:set", "django", "DISABLE_COLLECTSTATIC=1")
    skipped = dokuen.deploy("django", source)
    assert "DISABLE_COLLECTSTATIC=1: not running manage.py collectstatic" in skipped.stdout
    wait_for(lambda: _status(dokuen, "django", "/static/admin/css/base.css") == 404, "a 404")


def _status(dokuen: Dokuen, app: str, path: str) -> int | None:
    """The HTTP status of ``path`` from the app's one web process (None while it starts)."""
    rows = dokuen.running(app, 1)
    if not rows:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rows[0]['port']}{path}") as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code
    except OSError:
        return None


def test_a_node_app_runs_on_the_node_its_engines_ask_for(dokuen: Dokuen, tmp_path: Path) -> None:
    machine = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    assert not machine.stdout.startswith("v22.")  # the machine's node is another major
    source = tmp_path / "node22"
    source.mkdir()
    build = "node -e \"require('fs').writeFileSync('built-with', process.version)\""
    package = {
        "name": "node22",
        "version": "1.0.0",
        "engines": {"node": "22.x"},
        "scripts": {"start": "node server.js", "build": build},
    }
    (source / "package.json").write_text(json.dumps(package))
    (source / "server.js").write_text(
        textwrap.dedent(
            """
            const fs = require("fs");
            require("http").createServer((request, response) => {
              response.setHeader("Content-Type", "application/json");
              const built = fs.readFileSync("built-with");
              response.end(JSON.stringify({FACTS: process.version + " " + built}));
            }).listen(process.env.PORT, "127.0.0.1");
            """
        )
    )
    result = dokuen.deploy("node22", source)
    assert "-----> Installing node 22.x (package.json engines.node" in result.stdout
    assert "-----> Using node v22." in result.stdout
    running, built = facts(dokuen, "node22")
    assert running.startswith("v22.")
    assert built == running
    # The next build finds that node in its cache: no download.
    again = dokuen.deploy("node22", source)
    assert "-----> Installing node 22.x" in again.stdout
    assert facts(dokuen, "node22")[0] == running


@pytest.fixture
def open_home() -> Iterator[Path]:
    """A DOKUEN_HOME the build user can reach (pytest's temporary directories are 0700)."""
    top = Path(tempfile.mkdtemp(prefix="dokuen-buildpacks-"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches to a build user")
def test_as_a_build_uid_python_builds_with_uv_and_only_interpreters_it_can_run(
    open_home: Path,
) -> None:
    daemon = Dokuen(home=open_home / "home", ports=free_port_block())
    # A range of its own: a build's end kills every process of its uid.
    daemon.extra_env["DOKUEN_BUILD_UIDS"] = "2100003000-2100003009"
    daemon.extra_env["DOKUEN_APP_PATH"] = f"{PYTHON_313}:{DEFAULT_PATH}"
    daemon.start()
    try:
        source = python_app(open_home / "src", **{"requirements.txt": "six==1.17.0\n"})
        cold = daemon.deploy("iso", source)
        assert timed_step("Installing dependencies from requirements.txt with uv", cold.stdout)
        assert facts(daemon, "iso")[1:] == ["True", "False"]
        assert (daemon.home / "apps/iso/cache/python/venv").stat().st_uid == 2100003000
        assert (daemon.home / "apps/iso/releases/v1/.venv/bin/python").lstat().st_uid == 0
        warm = daemon.deploy("iso", source)
        assert "Nothing to install: requirements.txt is unchanged" in warm.stdout
        assert facts(daemon, "iso")[1:] == ["True", "False"]
        if PYTHON_313.is_dir():  # on PATH, but under /root: the build uid cannot run it
            (source / ".python-version").write_text("3.13\n")
            failed = daemon.deploy_result("iso", source)
            assert failed.returncode != 0
            assert ".python-version asks for Python 3.13, but this build can run only" in (
                failed.stdout
            )
            assert "3.13.0" not in failed.stdout.split("can run only")[1]
    finally:
        daemon.terminate()
