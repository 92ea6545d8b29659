"""Table tests for the Procfile parser: what parses, and errors that name file and line."""

import textwrap
from pathlib import Path

import pytest

from dokuen.errors import ProcfileError, UnsafeFile
from dokuen.supervise.procfile import Procfile, parse_procfile, read_procfile


@pytest.mark.parametrize(
    ("content", "commands"),
    [
        pytest.param(
            """
            web: ./server
            """,
            [("web", "./server")],
            id="simple",
        ),
        pytest.param(
            """
            web: gunicorn app:app
            worker: python worker.py
            clock: python clock.py
            """,
            [
                ("web", "gunicorn app:app"),
                ("worker", "python worker.py"),
                ("clock", "python clock.py"),
            ],
            id="file-order",
        ),
        pytest.param(
            """
            # the site
            web: ./server

               # indented comment
            worker: ./work
            #web: not a duplicate, a comment
            """,
            [("web", "./server"), ("worker", "./work")],
            id="comments-and-blank-lines",
        ),
        pytest.param("web:./server", [("web", "./server")], id="no-space-no-newline"),
        pytest.param("web:   ./server   \n", [("web", "./server")], id="command-trimmed"),
        pytest.param(
            "web: ./server\r\nworker: ./work\r\n",
            [("web", "./server"), ("worker", "./work")],
            id="crlf",
        ),
        pytest.param(
            """
            web: python -c "print(1)"; echo a:b
            """,
            [("web", 'python -c "print(1)"; echo a:b')],
            id="colons-in-command",
        ),
        pytest.param(
            """
            web: sh -c "echo $FOO" >/dev/null 2>&1 # not a comment
            """,
            [("web", 'sh -c "echo $FOO" >/dev/null 2>&1 # not a comment')],
            id="shell-metacharacters",
        ),
        pytest.param(
            """
            Web_2: a
            -x: b
            release: ./migrate
            """,
            [("Web_2", "a"), ("-x", "b"), ("release", "./migrate")],
            id="type-characters",
        ),
        pytest.param(
            'web: printf "a\fb\u2028c"\nworker: ./work\n',
            [("web", 'printf "a\fb\u2028c"'), ("worker", "./work")],
            id="only-newline-ends-a-line",
        ),
    ],
)
def test_parse_procfile(content: str, commands: list[tuple[str, str]]) -> None:
    procfile = parse_procfile(textwrap.dedent(content))
    assert procfile.commands == tuple(commands)
    assert procfile.types == tuple(name for name, _ in commands)
    for name, command in commands:
        assert procfile.command(name) == command


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            "web: ./server\nworker ./work\n",
            "Procfile:2: expected 'TYPE: COMMAND', got 'worker ./work'",
            id="no-colon",
        ),
        pytest.param(
            "web worker: x\n",
            "Procfile:1: invalid process type 'web worker' (use letters, digits, '_' and '-')",
            id="space-in-type",
        ),
        pytest.param(
            "\n\n: x\n",
            "Procfile:3: invalid process type ''",
            id="empty-type",
        ),
        pytest.param(
            "web.1: x\n",
            "Procfile:1: invalid process type 'web.1'",
            id="dot-in-type",
        ),
        pytest.param(
            "web: a\n# a comment\nweb: b\n",
            "Procfile:3: duplicate process type 'web'",
            id="duplicate-type",
        ),
        pytest.param(
            "web: ./server\r\n\r\nweb: ./other\r\n",
            "Procfile:3: duplicate process type 'web'",
            id="duplicate-type-crlf",
        ),
        pytest.param(
            "web: ./server\nworker:   \n",
            "Procfile:2: process type 'worker' has an empty command",
            id="empty-command",
        ),
        pytest.param(
            'web: printf "\f"\n\nbad line\n',
            "Procfile:3: expected 'TYPE: COMMAND'",
            id="form-feed-does-not-shift-line-numbers",
        ),
        pytest.param("", "Procfile: no process types", id="empty-file"),
        pytest.param(
            "# just a comment\n\n   \n",
            "Procfile: no process types",
            id="only-comments",
        ),
    ],
)
def test_parse_procfile_errors(content: str, message: str) -> None:
    with pytest.raises(ProcfileError) as info:
        parse_procfile(content)
    assert str(info.value).startswith(message)


def test_parse_procfile_names_the_given_file() -> None:
    with pytest.raises(ProcfileError, match=r"^/srv/app/Procfile:1: "):
        parse_procfile("oops\n", "/srv/app/Procfile")


def test_read_procfile(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_bytes("web: echo héllo\r\n".encode())
    assert read_procfile(tmp_path) == Procfile((("web", "echo héllo"),))


def test_read_procfile_error_names_path_and_line(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: ./server\nweb: ./other\n")
    with pytest.raises(ProcfileError) as info:
        read_procfile(tmp_path)
    assert str(info.value) == f"{tmp_path / 'Procfile'}:2: duplicate process type 'web'"


def test_read_procfile_missing(tmp_path: Path) -> None:
    with pytest.raises(ProcfileError) as info:
        read_procfile(tmp_path)
    assert str(info.value).startswith(f"no Procfile in {tmp_path} ")


def test_read_procfile_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_bytes(b"web: ./server\nworker: echo caf\xe9\n")
    with pytest.raises(ProcfileError) as info:
        read_procfile(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'Procfile'}:2: cannot read it as UTF-8")


def test_read_procfile_directory(tmp_path: Path) -> None:
    (tmp_path / "Procfile").mkdir()
    with pytest.raises(UnsafeFile) as info:
        read_procfile(tmp_path)
    assert str(info.value) == "Procfile is a directory, not a regular file; make it a regular file"


@pytest.mark.parametrize(
    ("line", "command"),
    [
        pytest.param("web", "gunicorn app:app", id="a-type"),
        pytest.param("web --workers 3", "gunicorn app:app --workers 3", id="args-appended"),
        pytest.param("web 'two words'", "gunicorn app:app 'two words'", id="args-quoted"),
        pytest.param("worker", "python worker.py", id="another-type"),
        pytest.param("bash", "bash", id="not-a-type"),
        pytest.param("web; id", "web; id", id="shell-line"),
        pytest.param("echo 'unbalanced", "echo 'unbalanced", id="bad-quotes"),
        pytest.param("", "", id="empty"),
    ],
)
def test_run_of_a_process_type_runs_its_command(line: str, command: str) -> None:
    procfile = parse_procfile("web: gunicorn app:app\nworker: python worker.py\n")
    assert procfile.one_off(line) == command


def test_read_procfile_refuses_a_link_and_never_reads_its_target(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root: cat /etc/shadow\n")  # a valid Procfile, were it followed
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Procfile").symlink_to(secret)
    with pytest.raises(UnsafeFile) as info:
        read_procfile(tmp_path / "app")
    assert str(info.value) == f"Procfile is a symbolic link (to {secret}); commit the file itself"
