"""The managed cluster's account: who it is, how it is made, and moving a 0.1 cluster's files
to it without following a link."""

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from dokuen.data import account
from dokuen.data.account import ACCOUNT, AccountError


@pytest.mark.parametrize(
    ("configured", "euid", "expected"),
    [
        (None, 0, "dokuen-postgres"),  # root: its own account, not the shared postgres
        ("pgowner", 0, "pgowner"),  # DOKUEN_POSTGRES_USER wins
        (None, 1000, None),  # not root: dokuend's own user, no switch
        ("pgowner", 1000, None),
    ],
)
def test_who_the_cluster_runs_as(configured: str | None, euid: int, expected: str | None) -> None:
    assert account.cluster_user(configured, euid) == expected


def test_the_account_is_a_system_one_without_home_or_shell() -> None:
    argv = account.useradd_argv(ACCOUNT)
    assert argv[0] == "useradd"
    assert argv[-1] == ACCOUNT
    for flag in ("--system", "--user-group", "--no-create-home"):
        assert flag in argv
    assert argv[argv.index("--shell") + 1] in (*account.NOLOGIN_SHELLS, "/bin/false")


def test_a_missing_override_is_not_made_but_named() -> None:
    with pytest.raises(AccountError, match=r"DOKUEN_POSTGRES_USER=no-such-pg-user: no such user"):
        account.ensure_account("no-such-pg-user")


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a system account")
def test_dokuens_own_account_is_made_when_missing() -> None:
    made = account.ensure_account(ACCOUNT)  # made now, or by an earlier test or daemon
    assert made.pw_uid != 0
    assert made.pw_uid < 1000  # a system account
    assert made.pw_shell in (*account.NOLOGIN_SHELLS, "/bin/false")
    assert account.ensure_account(ACCOUNT) == made  # the second time finds it


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None, reason="makes a system account"
)
def test_useradd_makes_a_system_account_with_its_own_group_and_no_home() -> None:
    """The very command ensure_account runs, for a throwaway name (the real account may be
    in use by other daemons on this machine, so it is not removed to be made again)."""
    name = f"dokuen-t{secrets.token_hex(4)}"
    subprocess.run(account.useradd_argv(name), check=True, capture_output=True)
    try:
        made = pwd.getpwnam(name)
        assert 0 < made.pw_uid < 1000
        assert grp.getgrgid(made.pw_gid).gr_name == name
        assert made.pw_shell in (*account.NOLOGIN_SHELLS, "/bin/false")
        assert not Path(made.pw_dir).exists()
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="changes owners")
def test_adopt_gives_the_tree_over_and_never_follows_a_link() -> None:
    top = Path(tempfile.mkdtemp(prefix="dokuen-adopt-"))
    nobody = pwd.getpwnam("nobody")
    try:
        data = top / "data"
        (data / "base" / "1").mkdir(parents=True)
        (data / "base" / "1" / "1234").write_text("rows")
        (data / "PG_VERSION").write_text("15\n")
        outside = top / "outside"
        outside.mkdir()
        (outside / "secret").write_text("root's")
        (data / "pg_tblspc").mkdir()
        (data / "pg_tblspc" / "999").symlink_to(outside)  # what a tablespace looks like
        (data / "shadow").symlink_to(outside / "secret")

        changed = account.adopt(data, nobody)
        assert changed == 8  # data, base, base/1, the file, PG_VERSION, pg_tblspc, 2 links
        for path in (data, data / "base" / "1" / "1234", data / "pg_tblspc" / "999"):
            assert path.lstat().st_uid == nobody.pw_uid
        assert outside.stat().st_uid == 0  # what the links point to stays root's
        assert (outside / "secret").stat().st_uid == 0
        assert account.adopt(data, nobody) == 0  # done: nothing more to change
        with pytest.raises(AccountError, match="is not a directory"):
            account.adopt(data / "shadow", nobody)
    finally:
        shutil.rmtree(top)
