"""Table tests for a process's environment: the layers and the app's .env defaults."""

import textwrap
from pathlib import Path

import pytest

from dokuen.errors import UnsafeFile
from dokuen.supervise.environment import process_environment, read_dotenv
from dokuen.supervise.formation import ProcessSpec

SPEC = ProcessSpec("blog", "web", 2, "./server")
HOME = Path("/srv/dokuen/apps/blog/releases/v3")
PATH = "/usr/bin:/bin"
PLATFORM = {
    "HOME": str(HOME),
    "PATH": PATH,
    "PORT": "5002",
    "DYNO": "web.2",
    "PS": "web.2",
    "APP": "blog",
}


@pytest.mark.parametrize(
    ("defaults", "config", "expected"),
    [
        pytest.param({}, {}, PLATFORM, id="nothing-else"),
        pytest.param({"A": "dotenv"}, {}, {**PLATFORM, "A": "dotenv"}, id="dotenv-default"),
        pytest.param({}, {"A": "config"}, {**PLATFORM, "A": "config"}, id="config"),
        pytest.param(
            {"A": "dotenv", "B": "dotenv"},
            {"B": "config"},
            {**PLATFORM, "A": "dotenv", "B": "config"},
            id="config-wins-over-dotenv",
        ),
        pytest.param(
            {"PATH": "/app/bin:/bin", "HOME": "/app"},
            {},
            {**PLATFORM, "PATH": "/app/bin:/bin", "HOME": "/app"},
            id="dotenv-wins-over-home-and-path",
        ),
        pytest.param(
            {"PATH": "/dotenv"},
            {"PATH": "/config"},
            {**PLATFORM, "PATH": "/config"},
            id="config-path-wins",
        ),
        pytest.param(
            {"PORT": "1", "DYNO": "x", "PS": "x", "APP": "x"},
            {"PORT": "80", "DYNO": "y", "PS": "y", "APP": "y"},
            PLATFORM,
            id="platform-owns-port-dyno-ps-app",
        ),
    ],
)
def test_process_environment(
    defaults: dict[str, str], config: dict[str, str], expected: dict[str, str]
) -> None:
    assert process_environment(SPEC, 5002, HOME, PATH, defaults, config) == expected


def test_process_environment_has_nothing_of_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOKUEN_TEST_DAEMON_ONLY", "secret")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    environment = process_environment(SPEC, 5002, HOME, PATH, {}, {})
    assert environment == PLATFORM


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("A=1\n", {"A": "1"}, id="plain"),
        pytest.param("A=1", {"A": "1"}, id="no-newline-at-eof"),
        pytest.param("# a comment\n\nA=1\n", {"A": "1"}, id="comments-and-blank-lines"),
        pytest.param("export A=1\n", {"A": "1"}, id="export"),
        pytest.param("A = 1 \n", {"A": "1"}, id="spaces-around"),
        pytest.param("A=1 # a comment\n", {"A": "1"}, id="inline-comment"),
        pytest.param("A='x y'\n", {"A": "x y"}, id="single-quoted"),
        pytest.param('A="x y"\n', {"A": "x y"}, id="double-quoted"),
        pytest.param("""A='say "hi"'\n""", {"A": 'say "hi"'}, id="double-in-single"),
        pytest.param("""A="it's"\n""", {"A": "it's"}, id="single-in-double"),
        pytest.param(r'A="a\nb"' + "\n", {"A": "a\nb"}, id="double-quoted-escape"),
        pytest.param(r"A='a\nb'" + "\n", {"A": r"a\nb"}, id="single-quoted-is-literal"),
        pytest.param('A="a # not a comment"\n', {"A": "a # not a comment"}, id="hash-in-quotes"),
        pytest.param(
            "DATABASE_URL=postgres://u:p@localhost:5432/db?sslmode=off\n",
            {"DATABASE_URL": "postgres://u:p@localhost:5432/db?sslmode=off"},
            id="url",
        ),
        pytest.param("A=\n", {"A": ""}, id="empty-value"),
        pytest.param("A\nB=2\n", {"B": "2"}, id="key-without-value-dropped"),
        pytest.param("A=1\nA=2\n", {"A": "2"}, id="last-wins"),
        pytest.param("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}, id="crlf"),
        # python-dotenv's expansion: ${VAR} and ${VAR:-default} from earlier entries, $VAR
        # as it is, single and double quotes alike, a later entry not yet known.
        pytest.param(
            "A=1\nB=${A}\nC=$A\nD='${A}2'\nE=\"${A}3\"\n",
            {"A": "1", "B": "1", "C": "$A", "D": "12", "E": "13"},
            id="expansion",
        ),
        pytest.param("A=${B:-x}\nB=2\n", {"A": "x", "B": "2"}, id="only-earlier-entries"),
        pytest.param("A=${NOPE}-\n", {"A": "-"}, id="unknown-is-empty"),
        pytest.param("A=1\nB=${A}\nA=2\nC=${A}\n", {"A": "2", "B": "1", "C": "2"}, id="in-order"),
    ],
)
def test_read_dotenv(tmp_path: Path, content: str, expected: dict[str, str]) -> None:
    (tmp_path / ".env").write_bytes(content.encode())
    assert read_dotenv(tmp_path) == expected


def test_read_dotenv_does_not_reach_the_daemon_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOKUEN_TEST_DAEMON_SECRET", "leaked")
    (tmp_path / ".env").write_text(
        textwrap.dedent(
            """\
            STOLEN=${DOKUEN_TEST_DAEMON_SECRET}
            DEFAULTED=${DOKUEN_TEST_UNSET:-fallback}
            """
        )
    )
    values = read_dotenv(tmp_path)
    assert "leaked" not in values.values()
    assert values == {"STOLEN": "", "DEFAULTED": "fallback"}


def test_read_dotenv_expands_against_the_apps_config(tmp_path: Path) -> None:
    # The issue's own example: DATABASE_URL built from a variable the app's config holds.
    (tmp_path / ".env").write_text(
        "USER=fallback\nDATABASE_URL=postgres://${USER}@localhost/db\nMODE=${MODE:-dev}\n"
    )
    values = read_dotenv(tmp_path, {"USER": "ada", "MODE": "prod"})
    assert values["DATABASE_URL"] == "postgres://ada@localhost/db"  # the config wins
    assert values["MODE"] == "prod"
    assert read_dotenv(tmp_path)["DATABASE_URL"] == "postgres://fallback@localhost/db"


def test_read_dotenv_missing(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path) == {}


def test_read_dotenv_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    with pytest.raises(UnsafeFile) as info:
        read_dotenv(tmp_path)
    assert str(info.value) == ".env is a directory, not a regular file; make it a regular file"


@pytest.mark.parametrize("target", ["/etc/shadow", "../secret.env", "nowhere"])
def test_read_dotenv_refuses_a_link_and_never_reads_its_target(tmp_path: Path, target: str) -> None:
    (tmp_path / "secret.env").write_text("SECRET=hunter2\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / ".env").symlink_to(target)
    with pytest.raises(UnsafeFile) as info:
        read_dotenv(tmp_path / "app")
    assert str(info.value) == f".env is a symbolic link (to {target}); commit the file itself"


def test_read_dotenv_refuses_a_nul_byte_no_process_could_start_with(tmp_path: Path) -> None:
    """A value with a NUL byte made every start of the app a ValueError in execve (not a
    one-line error); config:set already refused one (envdir.py)."""
    (tmp_path / ".env").write_bytes(b"A=1\nB=x\0y\n")
    with pytest.raises(UnsafeFile, match=r"^\.env:2: holds a NUL byte, which no environment"):
        read_dotenv(tmp_path)


def test_read_dotenv_not_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"A=1\nB=caf\xe9\n")
    with pytest.raises(UnsafeFile, match=r"^\.env:2: cannot read it as UTF-8 text"):
        read_dotenv(tmp_path)
