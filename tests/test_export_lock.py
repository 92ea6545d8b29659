"""The python buildpack's lock exporter (buildpacks/python/lib/export_lock.py), run as the
buildpack runs it: Pipfile.lock and poetry.lock become pinned requirements of the app's
main dependencies only, and a lock it cannot use fails with one line naming the fix."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from dokuen.resources import shipped

EXPORT = shipped("buildpacks") / "python" / "lib" / "export_lock.py"
APPS = Path(__file__).parent / "e2e" / "apps"


def export(kind: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXPORT), kind, str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_pipenv_fixture_exports_its_default_section_with_hashes() -> None:
    done = export("pipenv", APPS / "pipenv")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("six==1.17.0 ; python_version >= '2.7'")
    assert line.count("--hash=sha256:") == 2
    assert "iniconfig" not in done.stdout  # a dev package


def test_pipenv_git_path_and_unhashed_entries(tmp_path: Path) -> None:
    lock = {
        "_meta": {},
        "default": {
            "six": {"version": "==1.17.0"},
            "tool": {"git": "https://example.org/tool.git", "ref": "abc123"},
            "local": {"path": ".", "editable": True},
            "web": {"version": "==2.0", "extras": ["async"], "markers": "os_name == 'posix'"},
        },
        "develop": {"pytest": {"version": "==8.0"}},
    }
    (tmp_path / "Pipfile.lock").write_text(json.dumps(lock))
    done = export("pipenv", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "-e .",
        "six==1.17.0",
        "tool @ git+https://example.org/tool.git@abc123",
        "web[async]==2.0 ; os_name == 'posix'",
    ]


def test_a_pipfile_without_its_lock_or_with_a_loose_entry_fails_in_one_line(
    tmp_path: Path,
) -> None:
    missing = export("pipenv", tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "Pipfile has no Pipfile.lock beside it: run `pipenv lock` and commit Pipfile.lock"
    )
    (tmp_path / "Pipfile.lock").write_text(json.dumps({"default": {"six": {"version": "*"}}}))
    loose = export("pipenv", tmp_path)
    assert loose.returncode == 2
    assert "six has no pinned version: run `pipenv lock`" in loose.stderr
    (tmp_path / "Pipfile.lock").write_text("[1, 2]")
    assert "not a pipenv lock" in export("pipenv", tmp_path).stderr
    (tmp_path / "Pipfile.lock").write_text('{"default": {"six": {"version": 3}}}')
    odd = export("pipenv", tmp_path)
    assert odd.returncode == 2
    assert "Traceback" not in odd.stderr
    assert len(odd.stderr.strip().splitlines()) == 1


def test_the_poetry_fixture_exports_the_main_group_only() -> None:
    done = export("poetry", APPS / "poetry")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("six==1.17.0 --hash=sha256:")


POETRY_20 = """
[[package]]
name = "flask"
version = "3.1.0"
[package.dependencies]
Werkzeug = ">=3.1"

[[package]]
name = "werkzeug"
version = "3.1.3"

[[package]]
name = "pytest"
version = "8.0.0"

[metadata]
lock-version = "2.0"
"""


def test_an_older_poetry_lock_is_walked_from_the_main_dependencies(tmp_path: Path) -> None:
    (tmp_path / "poetry.lock").write_text(POETRY_20)
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.poetry]
            package-mode = false
            [tool.poetry.dependencies]
            python = "^3.11"
            flask = "^3.1"
            [tool.poetry.group.dev.dependencies]
            pytest = "*"
            """
        )
    )
    done = export("poetry", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["flask==3.1.0", "werkzeug==3.1.3"]
    (tmp_path / "poetry.lock").write_text('[[package]]\nname = "flask"\n')  # no version
    odd = export("poetry", tmp_path)
    assert odd.returncode == 2
    assert odd.stderr.startswith("poetry.lock is not in a form this buildpack reads")
    (tmp_path / "poetry.lock").write_text(POETRY_20)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "1"\ndependencies = ["flask", "requests>=2"]\n'
    )
    stale = export("poetry", tmp_path)
    assert stale.returncode == 2
    assert stale.stderr.strip() == (
        "poetry.lock has no entry for requests, which pyproject.toml needs: run `poetry lock` "
        "and commit poetry.lock"
    )
