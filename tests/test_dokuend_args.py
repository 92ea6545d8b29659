"""dokuend's command line, read without click: what it takes, and one line for what not."""

import subprocess
import sys
from pathlib import Path

import pytest

from dokuen import __version__
from dokuen.cli.dokuend import Options, UsageError, parse_args
from dokuen.errors import explain


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], Options()),
        (["--home", "/srv/d"], Options(home=Path("/srv/d"))),
        (["--home=/srv/d=x"], Options(home=Path("/srv/d=x"))),
        (["-v", "--home", "h"], Options(home=Path("h"), verbose=True)),
        (["--verbose"], Options(verbose=True)),
        (["--home", "h", "--version"], Options(show="version")),  # what a re-exec checks
        (["-h", "--bogus"], Options(show="help")),
        (["--help"], Options(show="help")),
        (["--home", "-v"], Options(home=Path("-v"))),  # a value, as click takes it
    ],
)
def test_the_options(argv: list[str], expected: Options) -> None:
    assert parse_args(argv) == expected


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--bogus"], "no such option: '--bogus'"),
        (["--home"], "option '--home' requires a directory"),
        (["--home="], "option '--home' requires a directory"),
        (["--verbose=yes"], "option '--verbose' does not take a value"),
        (["serve"], "unexpected argument 'serve'"),
        (["--hom", "x"], "no such option: '--hom'"),  # no abbreviations
    ],
)
def test_what_it_refuses(argv: list[str], error: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_args(argv)
    assert str(caught.value) == error


def test_a_file_is_no_home(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="is a file, not a directory"):
        parse_args(["--home", str(tmp_path / "f")])


def dokuend(*args: str) -> subprocess.CompletedProcess[str]:
    program = Path(sys.executable).parent / "dokuend"
    return subprocess.run([str(program), *args], capture_output=True, text=True, check=False)


def test_the_program_answers_version_help_and_a_bad_option() -> None:
    version = dokuend("--version")
    assert (version.returncode, version.stdout) == (0, f"dokuend, version {__version__}\n")
    helped = dokuend("--help")
    assert helped.returncode == 0
    assert "--home DIRECTORY" in helped.stdout
    bad = dokuend("--bogus")
    assert bad.returncode == 2
    assert bad.stderr == "error: no such option: '--bogus' (dokuend --help lists the options)\n"


def test_a_library_imported_on_first_use_is_looked_for_at_start() -> None:
    """The daemon imports cryptography, python-dotenv and others only when a request needs
    them: a broken installation must fail `dokuend --version` (which a re-exec runs first)
    and the start, in one line, not the first certificate or `.env` in a traceback."""
    hide = "import sys; sys.modules['cryptography'] = sys.modules['dotenv'] = None\n"
    run = "from dokuen.cli.dokuend import main; main(['--version'])"
    done = subprocess.run(
        [sys.executable, "-c", hide + run], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: dokuend's installation lacks cryptography, dotenv: reinstall dokuen with its "
        "dependencies (bin/setup, or pip install --force-reinstall dokuen)"
    ]
    whole = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, check=False)
    assert whole.returncode == 0
    assert whole.stdout.startswith("dokuend, version ")


def test_a_library_that_fails_to_import_later_is_one_line_naming_the_fix() -> None:
    try:
        import dokuen_no_such_library  # type: ignore[import-not-found]  # noqa: F401, PLC0415
    except ImportError as exc:
        message = explain(exc)
    assert message == (
        "dokuen's installation is broken (No module named 'dokuen_no_such_library'): "
        "reinstall dokuen with its dependencies, then dokuenctl daemon:reload"
    )
