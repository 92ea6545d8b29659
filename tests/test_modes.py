"""Owners and modes under DOKUEN_HOME (isolate/modes.py): the layout is what docs/security.md
says, and applying it never follows a symbolic link."""

import os
import stat
from pathlib import Path

import pytest

from dokuen.isolate.modes import KEEP, Entry, app_layout, apply, hand_over, home_layout
from dokuen.store import AppDir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_app_layout_keeps_everything_private_to_its_owner(tmp_path: Path) -> None:
    app = AppDir(tmp_path / "blog")
    (app.releases / "v1").mkdir(parents=True)
    (app.releases / "v1.json").write_text("{}")
    layout = {entry.path: entry for entry in app_layout(app, 3001, 3001, 3002)}
    assert (layout[app.root].mode, layout[app.root].uid, layout[app.root].gid) == (
        0o711,
        KEEP,
        3001,
    )
    assert (layout[app.env].mode, layout[app.env].uid) == (0o700, KEEP)
    assert (layout[app.data].mode, layout[app.data].uid, layout[app.data].gid) == (
        0o700,
        3001,
        3001,
    )
    assert (layout[app.cache].mode, layout[app.cache].uid) == (0o700, 3002)
    assert layout[app.repo].mode == 0o700
    assert layout[app.releases / "v1"].mode == 0o700
    assert layout[app.releases / "v1.json"].mode == 0o600
    assert layout[app.root / "database.json"].mode == 0o600
    # Nothing in an app's tree is readable by others.
    assert all(entry.mode & 0o044 == 0 for entry in layout.values())


def test_the_home_is_traversable_and_its_logs_are_for_the_admin_group(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "dokuen.log").write_text("")
    (tmp_path / "logs" / "dokuen.log.1").write_text("")
    (tmp_path / "nginx" / "logs").mkdir(parents=True)
    (tmp_path / "nginx" / "logs" / "error.log").write_text("")
    layout = {entry.path: entry for entry in home_layout(tmp_path, 4242)}
    assert layout[tmp_path].mode == layout[tmp_path / "apps"].mode == 0o711
    assert (layout[tmp_path / "logs"].mode, layout[tmp_path / "logs"].gid) == (0o750, 4242)
    for log in ("logs/dokuen.log", "logs/dokuen.log.1", "nginx/logs/error.log"):
        assert (layout[tmp_path / log].mode, layout[tmp_path / log].gid) == (0o640, 4242)
    assert layout[tmp_path / "nginx" / "logs"].mode == 0o750
    assert layout[tmp_path / "dokuend.env"].mode == 0o600


def test_apply_sets_modes_makes_what_is_missing_and_leaves_links_alone(tmp_path: Path) -> None:
    target = tmp_path / "outside"
    target.write_text("not ours")
    target.chmod(0o644)
    (tmp_path / "formation.json").symlink_to(target)
    (tmp_path / "env").mkdir(mode=0o755)
    problems = apply(
        [
            Entry(tmp_path / "env", 0o700),
            Entry(tmp_path / "data", 0o700, create=True),
            Entry(tmp_path / "absent", 0o700),
            Entry(tmp_path / "formation.json", 0o600, directory=False),
        ]
    )
    assert mode(tmp_path / "env") == mode(tmp_path / "data") == 0o700
    assert not (tmp_path / "absent").exists()
    assert mode(target) == 0o644  # the link was not followed
    assert problems == [
        f"{tmp_path / 'formation.json'}: left as it is (Too many levels of symbolic links)"
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives files away")
def test_hand_over_gives_a_tree_away_without_following_its_links(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root's")
    release = tmp_path / "v1"
    (release / "lib").mkdir(parents=True)
    (release / "lib" / "app.py").write_text("")
    (release / "escape").symlink_to(secret)
    (release / "lib" / "up").symlink_to(tmp_path)
    hand_over(release, 3001, 3001)
    assert (release.stat().st_uid, mode(release)) == (3001, 0o700)
    for path in (release / "lib", release / "lib" / "app.py", release / "escape"):
        assert path.lstat().st_uid == 3001
    assert secret.stat().st_uid == 0
    assert tmp_path.stat().st_uid == 0
    link = tmp_path / "link"
    link.symlink_to(release)
    with pytest.raises(OSError, match=r"Not a directory|symbolic links"):
        hand_over(link, 3001, 3001)


def test_with_a_git_account_pushes_get_tmp_and_sshd_may_read_the_keys(tmp_path: Path) -> None:
    # The system service runs dokuend as root; `git push dokuen@HOST:APP` logs in as the
    # dokuen account, which checks pushes out into tmp/ and whose sshd reads the keys.
    layout = {entry.path: entry for entry in home_layout(tmp_path, 4242, (990, 991))}
    tmp = layout[tmp_path / "tmp"]
    assert (tmp.mode, tmp.uid, tmp.gid, tmp.create) == (0o700, 990, 991, True)
    assert (layout[tmp_path / ".ssh"].mode, layout[tmp_path / ".ssh"].gid) == (0o750, 991)
    keys = layout[tmp_path / ".ssh" / "authorized_keys"]
    assert (keys.mode, keys.uid, keys.gid) == (0o640, KEEP, 991)  # root's, group-readable
    alone = {entry.path: entry for entry in home_layout(tmp_path, None)}
    assert (alone[tmp_path / "tmp"].uid, alone[tmp_path / ".ssh"].mode) == (KEEP, 0o700)
    assert alone[tmp_path / ".ssh" / "authorized_keys"].mode == 0o600
