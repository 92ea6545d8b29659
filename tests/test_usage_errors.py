"""dokuenctl's usage errors are one line each, exit 2: a bad value names itself and the fix,
anything else points at the command's help (not click's four-line usage block)."""

import subprocess
import sys
from pathlib import Path

import pytest

DOKUENCTL = [
    sys.executable,
    "-c",
    "from dokuen.cli.dokuenctl import main; main(prog_name='dokuenctl')",
]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["apps:create", "My_App"],
            "error: Invalid value for 'APP': invalid app name 'My_App' (use 1-63 lowercase"
            " letters, digits and '-', starting with a letter and not ending with '-')",
        ),
        (
            ["domains:add", "blog", "x.example; return 200"],
            "error: Invalid value for 'DOMAIN': invalid domain 'x.example; return 200' (use"
            " lowercase letters, digits, '-' and dots, like blog.example.com, at most 253"
            " characters)",
        ),
        (["ps:scale"], "error: Missing argument 'APP' (see: dokuenctl ps:scale --help)"),
        (["frobnicate"], "error: No such command 'frobnicate' (see: dokuenctl --help)"),
        (["ps", "--bogus"], "error: No such option '--bogus' (see: dokuenctl ps --help)"),
    ],
)
def test_a_usage_error_is_one_line(argv: list[str], line: str, tmp_path: Path) -> None:
    # No daemon runs at this socket: the error must come before any request is made.
    result = subprocess.run(
        [*DOKUENCTL, "--socket", str(tmp_path / "none.sock"), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")
