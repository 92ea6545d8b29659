"""The bundled buildpacks, run the way a builder runs them: bin/detect, bin/compile and
bin/release as subprocesses with a clean environment, against small apps in tmp_path.

Two tests need a package registry reachable from a clean environment (PyPI through the
machine's pip config for `six`, npm's registry for `is-number`), as a real build does; the
rest run offline.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dokuen.deploy.tools import find_uv
from dokuen.resources import shipped

BUILDPACKS = shipped("buildpacks")
NAMES = ("python", "node", "static", "procfile")
# The environment Dokuen's builder gives a build: config vars reach it only through ENV_DIR.
BUILD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Refuses connections: an index there proves a build did not need the network.
UNREACHABLE_INDEX = "http://127.0.0.1:9/simple"


# The uv Dokuen gives builds (DOKUEN_UV): the one installed with it.
UV = find_uv(None, BUILD_PATH)


def build_env(home: Path, path: str = BUILD_PATH, uv: str | None = None) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": path, "HOME": str(home), "STACK": "dokuen-1", "SOURCE_VERSION": ""}
    return {**env, **({"DOKUEN_UV": uv} if uv else {})}


def make_app(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def make_env_dir(root: Path, config: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for key, value in config.items():
        (root / key).write_text(value)
    return root


def run_bin(
    buildpack: str, script: str, *args: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run bin/SCRIPT of a bundled buildpack, stderr merged into stdout as a builder shows it."""
    return subprocess.run(
        [str(BUILDPACKS / buildpack / "bin" / script), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=90,
        check=False,
    )


def compile_app(
    buildpack: str, app: Path, cache: Path, env_dir: Path, home: Path, uv: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_bin(buildpack, "compile", app, cache, env_dir, env=build_env(home, uv=uv))


def release(buildpack: str, app: Path, home: Path) -> dict[str, Any]:
    result = run_bin(buildpack, "release", app, env=build_env(home))
    assert result.returncode == 0, result.stdout
    parsed = yaml.safe_load(result.stdout)
    assert isinstance(parsed, dict)
    assert parsed["addons"] == []
    assert isinstance(parsed["default_process_types"], dict)
    return parsed


# Starts COMMAND the way Dokuen starts a process: HOME and cwd are the app, the app's
# .profile.d scripts are sourced, then /bin/sh -c runs the command (passed as an argument,
# never spliced into the script).
LAUNCHER = 'for f in "$HOME"/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; exec /bin/sh -c "$1"'


def app_process_args(command: str) -> list[str]:
    return ["/bin/bash", "-c", LAUNCHER, "dokuen-test", command]


def run_in_app(app: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        app_process_args(command),
        cwd=app,
        env={"PATH": BUILD_PATH, "HOME": str(app)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def last_line(output: str) -> str:
    return output.rstrip("\n").splitlines()[-1]


@pytest.mark.parametrize(
    ("buildpack", "files", "name"),
    [
        ("python", {"requirements.txt": "six\n"}, "Python"),
        ("python", {"pyproject.toml": "[project]\n"}, "Python"),
        ("python", {"setup.py": ""}, "Python"),
        ("python", {"Pipfile": ""}, "Python"),
        ("python", {"Pipfile.lock": "{}"}, "Python"),
        ("python", {"package.json": "{}"}, None),
        ("python", {"src/requirements.txt": ""}, None),
        ("node", {"package.json": "{}"}, "Node.js"),
        ("node", {"requirements.txt": ""}, None),
        ("static", {"index.html": "<h1>hi</h1>"}, "Static HTML"),
        ("static", {"index.html": "", "Procfile": "web: ./serve\n"}, None),
        ("static", {"about.html": ""}, None),
        ("procfile", {"Procfile": "web: ./serve\n"}, "Procfile"),
        ("procfile", {"index.html": ""}, None),
    ],
)
def test_detect(tmp_path: Path, buildpack: str, files: dict[str, str], name: str | None) -> None:
    app = make_app(tmp_path / "app", files)
    result = run_bin(buildpack, "detect", app, env=build_env(tmp_path / "home"))
    if name is None:
        assert result.returncode == 1, result.stdout
    else:
        assert (result.returncode, result.stdout) == (0, f"{name}\n")


@pytest.mark.parametrize("buildpack", NAMES)
def test_scripts_are_executable(buildpack: str) -> None:
    for script in ("detect", "compile", "release"):
        assert os.access(BUILDPACKS / buildpack / "bin" / script, os.X_OK), (buildpack, script)


@pytest.mark.timeout(60)
def test_python_installs_requirements_with_uv_and_a_warm_rebuild_installs_nothing(
    tmp_path: Path,
) -> None:
    assert UV is not None
    cache = tmp_path / "cache"
    cold = make_app(tmp_path / "v1", {"requirements.txt": "six==1.17.0\n"})
    env_dir = make_env_dir(tmp_path / "env1", {})
    result = compile_app("python", cold, cache, env_dir, tmp_path, UV)
    assert result.returncode == 0, result.stdout
    assert re.search(
        r"^-----> Installing dependencies from requirements.txt with uv \(\d+\.\ds\)$",
        result.stdout,
        re.M,
    ), result.stdout
    assert (cache / "python" / "venv" / "pyvenv.cfg").is_file()
    ran = run_in_app(
        cold, 'python -c "import six, sys; print(sys.prefix)"; echo "$PYTHONUNBUFFERED"'
    )
    assert ran.stdout == f"{cold / '.venv'}\n1\n", ran.stderr
    assert release("python", cold, tmp_path)["default_process_types"] == {}

    # The same requirements again, with the only index unreachable: nothing is installed,
    # and the copied virtualenv runs from its new place (console scripts too).
    warm = make_app(tmp_path / "v2", {"requirements.txt": "six==1.17.0\n"})
    env_dir = make_env_dir(tmp_path / "env2", {"PIP_INDEX_URL": UNREACHABLE_INDEX})
    result = compile_app("python", warm, cache, env_dir, tmp_path, UV)
    assert result.returncode == 0, result.stdout
    assert "Nothing to install: requirements.txt is unchanged" in result.stdout
    shutil.rmtree(cold)
    assert run_in_app(warm, 'python -c "import six"').returncode == 0
    assert run_in_app(warm, "pip --version || uv --version || true").returncode == 0

    # A changed requirement installs again, from the (unreachable) index: a clear failure.
    (warm / "requirements.txt").write_text("six==1.16.0\n")
    result = compile_app("python", warm, cache, env_dir, tmp_path, UV)
    assert result.returncode != 0
    assert last_line(result.stdout).startswith(" !     Check the names and versions in")


def test_python_without_uv_installs_with_pip(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {"requirements.txt": "# nothing\n"})
    result = compile_app(
        "python", app, tmp_path / "cache", make_env_dir(tmp_path / "e", {}), tmp_path
    )
    assert result.returncode == 0, result.stdout
    assert "Creating a virtualenv with python -m venv (uv is not installed)" in result.stdout
    assert "Installing dependencies from requirements.txt with pip" in result.stdout
    assert not (tmp_path / "cache" / "python" / "venv").exists()  # pip venvs are not moved


def test_python_install_failure_fails_the_build(tmp_path: Path) -> None:
    empty_index = tmp_path / "index"
    empty_index.mkdir()
    app = make_app(tmp_path / "app", {"requirements.txt": "dokuen-no-such-package==1.0\n"})
    env_dir = make_env_dir(tmp_path / "env", {"PIP_INDEX_URL": empty_index.as_uri()})
    result = compile_app("python", app, tmp_path / "cache", env_dir, tmp_path, UV)
    assert result.returncode != 0
    assert "dokuen-no-such-package" in result.stdout
    assert " !     Installing the dependencies in requirements.txt failed" in result.stdout
    assert not (tmp_path / "cache" / "python" / "venv").exists()


def test_python_fails_when_runtime_txt_asks_for_a_python_the_build_lacks(tmp_path: Path) -> None:
    app = make_app(
        tmp_path / "app", {"requirements.txt": "# nothing\n", "runtime.txt": "python-2.7.18\n"}
    )
    for uv in (UV, None):
        result = compile_app("python", app, tmp_path / "cache", tmp_path, tmp_path, uv)
        assert result.returncode != 0
        assert " !     runtime.txt asks for Python 2.7.18, but this build can run only: " in (
            result.stdout
        )
    (app / "runtime.txt").write_text("python-3.x; rm -rf /\n")
    result = compile_app("python", app, tmp_path / "cache", tmp_path, tmp_path, UV)
    assert result.returncode != 0
    assert "runtime.txt: '3.x;rm-rf/' is not a Python version" in result.stdout


PACKAGE_JSON = """{
  "name": "demo", "version": "1.0.0", "private": true,
  "scripts": {
    "build": "node -e \\"require('fs').writeFileSync('built.txt', process.env.NODE_ENV)\\"",
    "start": "node server.js"
  }
}
"""


def test_node_runs_the_build_script(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {"package.json": PACKAGE_JSON, "server.js": ""})
    result = compile_app(
        "node", app, tmp_path / "cache", make_env_dir(tmp_path / "env", {}), tmp_path
    )
    assert result.returncode == 0, result.stdout
    assert re.search(
        r"^-----> Running the build script \(npm run build\) \(\d+\.\ds\)$", result.stdout, re.M
    )
    assert (app / "built.txt").read_text() == "production"
    assert release("node", app, tmp_path)["default_process_types"] == {"web": "npm start"}
    ran = run_in_app(app, 'echo "$PATH"; echo "$NODE_ENV"')
    assert ran.stdout == f"{BUILD_PATH}:{app}/node_modules/.bin\nproduction\n"


@pytest.mark.timeout(60)
def test_node_installs_a_dependency_into_its_cache(tmp_path: Path) -> None:
    package = '{"name": "demo", "version": "1.0.0", "dependencies": {"is-number": "7.0.0"}}'
    app = make_app(tmp_path / "app", {"package.json": package, "server.js": ""})
    cache = tmp_path / "cache"
    result = compile_app("node", app, cache, make_env_dir(tmp_path / "env", {}), tmp_path)
    assert result.returncode == 0, result.stdout
    assert "-----> Installing dependencies with npm install" in result.stdout
    assert any((cache / "npm").iterdir())
    ran = run_in_app(app, "node -e \"process.exit(require('is-number')(5) ? 0 : 1)\"")
    assert ran.returncode == 0, ran.stderr
    assert release("node", app, tmp_path)["default_process_types"] == {"web": "node server.js"}


def test_node_without_node_names_the_packages(tmp_path: Path) -> None:
    tools = tmp_path / "bin"  # what compile needs before its check (its #! line), no node or npm
    tools.mkdir()
    for tool in ("env", "bash"):
        found = shutil.which(tool, path=BUILD_PATH)
        assert found is not None
        (tools / tool).symlink_to(found)
    app = make_app(tmp_path / "app", {"package.json": "{}"})
    result = run_bin(
        "node",
        "compile",
        app,
        tmp_path / "cache",
        tmp_path / "env",
        env=build_env(tmp_path / "home", path=str(tools)),
    )
    assert result.returncode == 1
    assert last_line(result.stdout) == " !     On Debian or Ubuntu: sudo apt-get install nodejs npm"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[str]:
    """A built static app serving on a free port; yields its URL and stops it afterwards."""
    app = make_app(
        tmp_path / "app",
        {"index.html": "<h1>hello</h1>\n", ".env": "SECRET=1\n", "docs/guide.html": "guide"},
    )
    result = compile_app(
        "static", app, tmp_path / "cache", make_env_dir(tmp_path / "env", {}), tmp_path
    )
    assert result.returncode == 0, result.stdout
    web = release("static", app, tmp_path)["default_process_types"]["web"]
    port = free_port()
    server = subprocess.Popen(
        app_process_args(web),
        cwd=app,
        env={"PATH": BUILD_PATH, "HOME": str(app), "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "the static web process exited"
                assert time.monotonic() < deadline, "the static web process never listened"
                time.sleep(0.05)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: the group is just it
        server.wait(timeout=10)


def test_static_web_process_serves_the_files(static_site: str) -> None:
    assert fetch(f"{static_site}/") == (200, b"<h1>hello</h1>\n")
    assert fetch(f"{static_site}/docs/guide.html") == (200, b"guide")


@pytest.mark.parametrize(
    "path", ["/.env", "/.profile.d/", "/%2eenv", "/docs/", "//.env", "/docs/../.env?x=1"]
)
def test_static_web_process_hides_dotfiles_and_listings(static_site: str, path: str) -> None:
    assert fetch(f"{static_site}{path}")[0] == 404


def test_procfile_builds_nothing(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {"Procfile": "web: ./serve\n"})
    result = compile_app("procfile", app, tmp_path / "cache", tmp_path / "env", tmp_path)
    assert (result.returncode, result.stdout) == (
        0,
        "-----> Nothing to build: the Procfile's commands run as they are\n",
    )
    assert sorted(path.name for path in app.iterdir()) == ["Procfile"]
    assert release("procfile", app, tmp_path)["default_process_types"] == {}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_node_uses_pnpm_through_corepack_and_prunes_dev_dependencies(tmp_path: Path) -> None:
    package = (
        '{"name": "demo", "version": "1.0.0", "packageManager": "pnpm@9.15.0",'
        ' "dependencies": {"is-number": "7.0.0"}, "devDependencies": {"is-odd": "3.0.1"},'
        ' "scripts": {"build": "node -e \\"require(\'is-odd\')\\""}}'
    )
    app = make_app(tmp_path / "app", {"package.json": package, "server.js": ""})
    result = compile_app(
        "node", app, tmp_path / "cache", make_env_dir(tmp_path / "env", {}), tmp_path
    )
    assert result.returncode == 0, result.stdout
    assert "-----> Preparing pnpm with corepack (pnpm@9.15.0)" in result.stdout
    assert "-----> Installing dependencies with pnpm install (no pnpm-lock.yaml)" in result.stdout
    assert "-----> Running the build script (pnpm run build)" in result.stdout  # is-odd there
    assert (app / "node_modules" / "is-number").is_dir()
    assert not (app / "node_modules" / "is-odd").exists()  # pruned after the build
    assert (tmp_path / "cache" / "corepack").is_dir()
