"""An app's environment carried past root's steps (isolate/carried.py): root sees none of
it, and the program at the end gets all of it back, byte for byte, through a real shell."""

import errno
import json
import subprocess
import sys

import pytest

from dokuen.errors import explain
from dokuen.isolate.carried import PREFIX, RESTORE, ROOT_ENVIRONMENT, carry

HOSTILE = {
    "PATH": "/app/bin:/usr/bin:/bin",
    "LD_PRELOAD": "/app/evil.so",
    "MEMUSAGE_OUTPUT": "/etc/passwd",
    "IFS": "/",
    "ENV": "/app/rc",
    "QUOTES": 'it\'s "quoted" \\ and `id` and $(id) and ${HOME}',
    "LINES": "one\ntwo\n\nthree\n",
    "GLOB": "* ?[a]",
    "SPACES": "  a  b  ",
    "EMPTY": "",
    "UNICODE": "caf\u00e9 \u202e \U0001f600",
    "EVAL": '"; touch /tmp/dokuen-carried-pwned; "',
    "X": "the value of X",
    "DOKUEN_CARRIED_X": "a var that looks like X's carrier",
    "DOKUEN_CARRIED": "the script's look-alike",
    "DOKUEN_CARRIED_DOKUEN_CARRIED": "and its carrier's",
    "LONG": "v" * 100_000,
}
DUMP = "import json, os; print(json.dumps(dict(os.environ)))"


def test_root_sees_nothing_of_the_apps_environment() -> None:
    argv, env = carry(HOSTILE, ["/bin/true"])
    for name in ROOT_ENVIRONMENT:
        assert env[name] == ROOT_ENVIRONMENT[name]
    assert {"LD_PRELOAD", "MEMUSAGE_OUTPUT", "IFS", "ENV", "X"}.isdisjoint(env)
    assert all(name in ROOT_ENVIRONMENT or name.startswith("DOKUEN_CARRIED") for name in env)
    assert argv == ["/bin/sh", "-c", RESTORE, "dokuen-env", "/bin/true"]  # no value in argv


def test_the_program_gets_the_whole_environment_back_through_a_real_shell() -> None:
    argv, env = carry(HOSTILE, [sys.executable, "-c", DUMP])
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    got.pop("PWD", None)  # the shell's own, as any /bin/sh -c gives
    got.pop("LC_CTYPE", None)  # Python's C locale coercion, not the shell's
    assert got == HOSTILE
    # The program itself (as the app) is the one asked to preload, and only it.
    assert done.stderr.count("ERROR: ld.so: object '/app/evil.so'") == 1, done.stderr


def test_a_name_no_shell_can_export_is_left_out() -> None:
    argv, env = carry({"A-B": "x", "1X": "y", "OK": "z"}, [sys.executable, "-c", DUMP])
    assert "A-B" not in env[f"{PREFIX}0"]
    assert "1X" not in env[f"{PREFIX}0"]
    assert env[f"{PREFIX}OK"] == "z"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    assert got.get("OK") == "z"
    assert "A-B" not in got
    assert "1X" not in got


def test_a_thousand_variables_and_more_still_start_the_program() -> None:
    """Linux refuses one environment string over 128 KiB (E2BIG): the renaming of 5000
    variables is three times that, cut into parts. Each part and each carrier stays
    under the limit, the program gets every variable back, and root sees no app name."""
    many = {f"APP_SETTING_NUMBER_{i:05d}": f"value {i}\n$(id)" for i in range(5000)}
    many |= {"X": "x", f"{PREFIX}X": "carrier look-alike", f"{PREFIX}0": "a part's look-alike"}
    argv, env = carry(many, [sys.executable, "-c", DUMP])
    assert len(env) > len(many) + 3  # the renaming is in more than one part
    assert all(len(name) + len(value) + 1 < 128 * 1024 for name, value in env.items())
    assert not set(many) & (set(env) - {f"{PREFIX}X", f"{PREFIX}0"})
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    got.pop("PWD", None)
    got.pop("LC_CTYPE", None)
    assert got == many


def test_an_environment_no_process_can_start_with_is_one_line_naming_the_fix() -> None:
    """Past the kernel's limit on a whole environment (ARG_MAX) nothing starts, carried or
    not: the user is told which thing is too big and what to remove."""
    argv, env = carry({f"BIG_{n}": "v" * 65_000 for n in range(200)}, ["/bin/true"])
    with pytest.raises(OSError, match="Argument list too long") as info:
        subprocess.run(argv, env=env, check=True)
    assert info.value.errno == errno.E2BIG
    said = explain(info.value)
    assert "\n" not in said
    assert said.endswith(
        "(the app's environment is too big to start a process with: "
        "remove config vars (dokuenctl config:unset) or shorten its .env)"
    )
