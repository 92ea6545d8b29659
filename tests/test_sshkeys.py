"""authorized_keys, the pure part: reading one public key, fingerprints, and the file's lines."""

import os
import re
import stat
from pathlib import Path

import pytest

from dokuen.entrypoint import Entrypoint
from dokuen.errors import Conflict, InvalidKey, InvalidName, NotFound, SettingsError
from dokuen.ssh.keys import (
    HEADER,
    AuthorizedKey,
    AuthorizedKeys,
    PublicKey,
    fingerprint_with_ssh_keygen,
    parse,
    parse_public_key,
    refresh,
    render,
    render_line,
    save,
)

ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIJ9569Tc5zEw6HdcRm7Wa6He4ahD6Fqfs4+DN0tkUhR5"
ED25519_FINGERPRINT = "SHA256:Ifu4j+6AlXTRuKC1YebvriQQlxubn/hCpN01X7GGGi0"
ECDSA = (
    "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPimnpU3trSEc/W8x51BcTNEi4LSVxpDI1Zo"
    "sATg6J3fUpxEpKETXj8MWKvTUgPaXM9TYE5eULHRG6WLhI03K5I="
)
ECDSA_FINGERPRINT = "SHA256:izudZo59EBrI7lhxi+9lhoaMby3/Os87MElOPW3NZ3M"
ENTRY = Entrypoint(Path("/usr/bin/dokuenctl"), Path("/var/lib/dokuen/dokuend.sock"))
ALICE = AuthorizedKey("alice", PublicKey("ssh-ed25519", ED25519))
ALICE_LINE = (
    'command="/usr/bin/dokuenctl --socket /var/lib/dokuen/dokuend.sock ssh-serve alice",'
    f"restrict,pty ssh-ed25519 {ED25519} alice"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"ssh-ed25519 {ED25519} alice@laptop\n", PublicKey("ssh-ed25519", ED25519)),
        (f"ssh-ed25519 {ED25519}", PublicKey("ssh-ed25519", ED25519)),
        (f"\n# my key\n  ssh-ed25519 {ED25519} a b c  \n\n", PublicKey("ssh-ed25519", ED25519)),
        (f"ecdsa-sha2-nistp256 {ECDSA} root@vm\n", PublicKey("ecdsa-sha2-nistp256", ECDSA)),
    ],
)
def test_parse_public_key_reads_one_key_and_drops_its_comment(
    text: str, expected: PublicKey
) -> None:
    assert parse_public_key(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n",
            "that is a private key: give its public half",
            id="private-openssh",
        ),
        pytest.param(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n",
            "that is a private key",
            id="private-pem",
        ),
        pytest.param("", "no public key in it", id="empty"),
        pytest.param("# only a comment\n\n", "no public key in it", id="comment"),
        pytest.param(
            f"ssh-ed25519 {ED25519} a\necdsa-sha2-nistp256 {ECDSA} b\n",
            "it holds 2 lines; give one public key",
            id="two-keys",
        ),
        pytest.param("hello world\n", "not a public key: it starts with 'hello'", id="garbage"),
        pytest.param(
            f'command="x" ssh-ed25519 {ED25519} a\n',
            "an authorized_keys line with options",
            id="options",
        ),
        pytest.param(
            f"restrict ssh-ed25519 {ED25519} a\n",
            "an authorized_keys line with options",
            id="restrict",
        ),
        pytest.param("ssh-ed25519\n", "the ssh-ed25519 key's data is damaged", id="no-data"),
        pytest.param("ssh-ed25519 !!!!\n", "key's data is damaged", id="not-base64"),
        pytest.param(f"ssh-rsa {ED25519}\n", "the ssh-rsa key's data is damaged", id="wrong-type"),
        pytest.param("ssh-dss AAAAB3NzaC1kc3M=\n", "not a key type", id="dsa"),
        pytest.param(
            "---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----\n",
            "convert it with ssh-keygen -i",
            id="rfc4716",
        ),
    ],
)
def test_parse_public_key_refuses_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidKey, match=re.escape(message)):
        parse_public_key(text)


def test_fingerprints_match_ssh_keygen() -> None:
    assert PublicKey("ssh-ed25519", ED25519).fingerprint == ED25519_FINGERPRINT
    assert PublicKey("ecdsa-sha2-nistp256", ECDSA).fingerprint == ECDSA_FINGERPRINT
    assert fingerprint_with_ssh_keygen(PublicKey("ssh-ed25519", ED25519)) == ED25519_FINGERPRINT


def test_ssh_keygen_refuses_key_data_that_only_starts_right() -> None:
    damaged = PublicKey("ssh-ed25519", ED25519[:-12] + "AAAA")
    with pytest.raises(InvalidKey, match=r"^ssh-keygen cannot read the key"):
        fingerprint_with_ssh_keygen(damaged)


def test_a_managed_line_forces_the_command_and_names_the_key() -> None:
    assert render_line(ENTRY, ALICE) == ALICE_LINE


def test_unplain_paths_are_refused_not_quoted() -> None:
    spaced = Entrypoint(Path("/opt/my apps/dokuenctl"), ENTRY.socket)
    with pytest.raises(SettingsError, match="must be absolute and use only"):
        render_line(spaced, ALICE)
    quoted = Entrypoint(ENTRY.dokuenctl, Path('/var/lib/"x/dokuend.sock'))
    with pytest.raises(SettingsError):
        render_line(quoted, ALICE)


def test_the_file_round_trips_and_keeps_lines_it_did_not_write() -> None:
    foreign = f"ssh-ed25519 {ED25519[:-4]}AAAA admin@box"
    bob = AuthorizedKey("bob", PublicKey("ecdsa-sha2-nistp256", ECDSA))
    content = AuthorizedKeys((ALICE,), (foreign,)).add(bob)
    text = render(ENTRY, content)
    assert text == HEADER + f"{foreign}\n{ALICE_LINE}\n" + render_line(ENTRY, bob) + "\n"
    assert parse(text) == content
    # A reinstall moved dokuenctl: the same keys, written for the new path.
    moved = Entrypoint(Path("/opt/dokuen/bin/dokuenctl"), ENTRY.socket)
    assert parse(render(moved, parse(text))) == content
    assert parse(text).remove("alice") == AuthorizedKeys((bob,), (foreign,))


def test_a_line_that_only_looks_managed_is_kept_as_it_is() -> None:
    other = f'command="/bin/sh",restrict ssh-ed25519 {ED25519} alice'
    assert parse(other) == AuthorizedKeys((), (other,))


def test_duplicate_names_and_keys_are_refused() -> None:
    keys = AuthorizedKeys((ALICE,))
    with pytest.raises(Conflict, match=r"^there is already an ssh key named 'alice'"):
        keys.add(AuthorizedKey("alice", PublicKey("ecdsa-sha2-nistp256", ECDSA)))
    with pytest.raises(Conflict, match=r"^that key is already authorized, as 'alice'"):
        keys.add(AuthorizedKey("alice2", ALICE.key))
    foreign = AuthorizedKeys((), (f"ssh-ed25519 {ED25519} admin",))
    with pytest.raises(Conflict, match="on a line dokuen did not write"):
        foreign.add(ALICE)
    with pytest.raises(NotFound, match=r"^no ssh key named 'alic'; did you mean 'alice'"):
        keys.remove("alic")


CI = AuthorizedKey("ci", PublicKey("ecdsa-sha2-nistp256", ECDSA), ("blog", "notes"))
CI_LINE = (
    'command="/usr/bin/dokuenctl --socket /var/lib/dokuen/dokuend.sock ssh-serve ci '
    f'--app blog --app notes",restrict,pty ecdsa-sha2-nistp256 {ECDSA} ci'
)


def test_a_scoped_key_carries_its_apps_in_its_forced_command() -> None:
    assert render_line(ENTRY, CI) == CI_LINE
    # Given in any order, twice: written once each, sorted.
    shuffled = AuthorizedKey("ci", CI.key, ("notes", "blog", "notes"))
    assert render_line(ENTRY, shuffled) == CI_LINE
    assert parse(CI_LINE) == AuthorizedKeys((CI,))
    assert parse(render(ENTRY, AuthorizedKeys((ALICE, CI)))) == AuthorizedKeys((ALICE, CI))
    assert CI.info()["apps"] == ["blog", "notes"]
    assert ALICE.info()["apps"] == []


def test_a_line_of_0_1_is_an_admin_key() -> None:
    (key,) = parse(ALICE_LINE).keys
    assert key == ALICE
    assert key.apps == ()


def test_a_scoped_app_that_is_not_an_app_name_is_never_written() -> None:
    with pytest.raises(InvalidName, match=r"^invalid app name 'Blog\"'"):
        render_line(ENTRY, AuthorizedKey("ci", CI.key, ('Blog"',)))


@pytest.mark.parametrize(
    "tail",
    [
        "ssh-serve ci --app",  # an option without its app
        "ssh-serve ci --app Blog",  # not an app name
        "ssh-serve ci --apps blog",  # another option
        "ssh-serve ci blog",  # a bare word
        "ssh-serve ci --app blog --app",
        "ssh-serve bob --app blog",  # another key's name
    ],
)
def test_a_line_with_a_scope_dokuen_never_writes_is_kept_as_it_is(tail: str) -> None:
    command = f"/usr/bin/dokuenctl --socket /s {tail}"
    line = f'command="{command}",restrict ecdsa-sha2-nistp256 {ECDSA} ci'
    assert parse(line) == AuthorizedKeys((), (line,))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to a group needs root")
def test_saved_keys_are_readable_by_the_ssh_accounts_group_alone(tmp_path: Path) -> None:
    path = tmp_path / ".ssh" / "authorized_keys"
    save(path, "# keys\n", group=65534)
    assert (stat.S_IMODE(path.parent.stat().st_mode), path.parent.stat().st_gid) == (0o750, 65534)
    assert (stat.S_IMODE(path.stat().st_mode), path.stat().st_gid) == (0o640, 65534)
    assert path.stat().st_uid == 0  # sshd's StrictModes: root's or the account's own
    other = tmp_path / "other" / "authorized_keys"
    save(other, "# keys\n")
    assert stat.S_IMODE(other.stat().st_mode) == 0o600
    assert stat.S_IMODE(other.parent.stat().st_mode) == 0o700


def test_a_line_from_before_terminals_is_still_ours_and_is_written_with_pty(
    tmp_path: Path,
) -> None:
    """Lines written as `restrict` alone (no terminal for `ssh -t ... run APP bash`) are
    read as managed keys and rewritten with `restrict,pty` when dokuend starts."""
    old = ALICE_LINE.replace(",restrict,pty ", ",restrict ")
    assert parse(old) == AuthorizedKeys((ALICE,))
    path = tmp_path / "authorized_keys"
    path.write_text(HEADER + old + "\n")
    assert refresh(path, ENTRY)
    assert path.read_text() == HEADER + ALICE_LINE + "\n"
    assert not refresh(path, ENTRY)
