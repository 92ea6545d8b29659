"""Who may ``git push`` over ssh: ``$DOKUEN_HOME/.ssh/authorized_keys``, owned by dokuend.

Each key dokuen manages is one line that ties it to the forced command ``dokuenctl ...
ssh-serve NAME``, or ``ssh-serve NAME --app APP...`` for a key limited to some apps
(command.py and scope.py say what that allows):

    command="/bin/dokuenctl --socket /d/dok.sock ssh-serve al",restrict,pty ssh-ed25519 AAAA... al
    command="/bin/dokuenctl --socket /d/dok.sock ssh-serve ci --app blog",restrict,pty ...

The scope lives in the line itself, so sshd hands it to ssh-serve and nothing else has to
agree with it; the app names in it are checked names (DNS labels), never escaped.
``restrict`` takes every forwarding away; ``pty`` gives back a terminal when the client
asks for one, for ``ssh -t dokuen@HOST dokuenctl run APP bash``.

Parsing and rendering are pure; ``fingerprint_with_ssh_keygen`` and ``load``/``save`` at the
bottom are the only I/O. Lines someone else wrote into the file are kept as they are.
"""

import base64
import binascii
import os
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dokuen.entrypoint import Entrypoint
from dokuen.errors import Conflict, InvalidKey, InvalidName
from dokuen.names import check_app_name, check_ssh_key_name, not_found
from dokuen.store import write_atomic

KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
)
BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
MAX_KEY_TEXT = 16 << 10
HEADER = (
    "# Written by dokuend: change it with dokuenctl ssh-keys:add and ssh-keys:remove.\n"
    "# Lines it did not write are kept as they are.\n"
)
_MANAGED = re.compile(
    r'command="(?P<command>[^"]*)",restrict(?:,pty)? (?P<type>\S+) (?P<blob>\S+) (?P<name>\S+)'
)


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: str  # base64, as in a .pub file

    @property
    def fingerprint(self) -> str:
        """``SHA256:...``, as ``ssh-keygen -l`` and sshd's log show it."""
        import hashlib  # noqa: PLC0415 (libcrypto, 3 MiB: not at start)

        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class AuthorizedKey:
    name: str
    key: PublicKey
    apps: tuple[str, ...] = ()  # the apps it is limited to; none: an admin key

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.key.type,
            "fingerprint": self.key.fingerprint,
            "apps": list(self.apps),
        }


@dataclass(frozen=True)
class AuthorizedKeys:
    """The file's content: the keys dokuen manages, and every other line as it was."""

    keys: tuple[AuthorizedKey, ...] = ()
    others: tuple[str, ...] = ()

    def add(self, new: AuthorizedKey) -> "AuthorizedKeys":
        """Raises Conflict when the name or the key is already there."""
        for old in self.keys:
            if old.name == new.name:
                raise Conflict(f"there is already an ssh key named {new.name!r}")
            if old.key.blob == new.key.blob:
                raise Conflict(f"that key is already authorized, as {old.name!r}")
        if any(new.key.blob in line.split() for line in self.others):
            raise Conflict("that key is already in authorized_keys, on a line dokuen did not write")
        return AuthorizedKeys((*self.keys, new), self.others)

    def remove(self, name: str) -> "AuthorizedKeys":
        """Raises NotFound when no key has that name."""
        if name not in [key.name for key in self.keys]:
            raise not_found("ssh key", name, [key.name for key in self.keys])
        return AuthorizedKeys(tuple(k for k in self.keys if k.name != name), self.others)


def parse_public_key(text: str) -> PublicKey:
    """The one public key in ``text`` (a .pub file); its comment is dropped.

    Raises:
        InvalidKey: a private key, several keys, none, an authorized_keys line with
        options, another format, or a key whose data is not what its type says.
    """
    if "PRIVATE KEY-----" in text:
        raise InvalidKey(
            "that is a private key: give its public half (the .pub file, e.g. "
            "~/.ssh/id_ed25519.pub) and keep the private key to yourself"
        )
    if "BEGIN SSH2 PUBLIC KEY" in text:
        raise InvalidKey(
            "that is an RFC 4716 (PuTTY) key: convert it with ssh-keygen -i -f FILE first"
        )
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise InvalidKey(
            "no public key in it (expected one line like 'ssh-ed25519 AAAA... you@host')"
        )
    if len(lines) > 1:
        raise InvalidKey(f"it holds {len(lines)} lines; give one public key, each key its own name")
    fields = lines[0].split()
    key_type = fields[0]
    if key_type not in KEY_TYPES:
        if "=" in key_type or "," in key_type or key_type in ("restrict", "no-pty"):
            raise InvalidKey(
                "that is an authorized_keys line with options; give a plain public key"
            )
        shown = key_type if len(key_type) <= 40 else key_type[:40] + "..."
        raise InvalidKey(
            f"not a public key: it starts with {shown!r}, not a key type ({', '.join(KEY_TYPES)})"
        )
    if len(fields) < 2 or not BASE64.fullmatch(fields[1]) or _wire_type(fields[1]) != key_type:
        raise InvalidKey(f"the {key_type} key's data is damaged (copy the .pub file again)")
    return PublicKey(key_type, fields[1])


def _wire_type(blob: str) -> str | None:
    """The key type written inside the key data (a length-prefixed string)."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 4:
        return None
    (length,) = struct.unpack(">I", raw[:4])
    return raw[4 : 4 + length].decode("ascii", errors="replace") if length <= 64 else None


def key_apps(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The apps a key is limited to, checked, each once, sorted.

    Raises:
        InvalidName: one is not an app name.
    """
    return tuple(sorted({check_app_name(name) for name in names}))


def render_line(entrypoint: Entrypoint, key: AuthorizedKey) -> str:
    """One managed line: the key, restricted to its forced command (and its apps)."""
    scope = [word for app in key_apps(key.apps) for word in ("--app", app)]
    command = entrypoint.command("ssh-serve", check_ssh_key_name(key.name), *scope)
    return f'command="{command}",restrict,pty {key.key.type} {key.key.blob} {key.name}'


def parse(text: str) -> AuthorizedKeys:
    """Read authorized_keys: lines dokuen wrote become keys, other lines are kept as they are
    (our own header comment is dropped, it is written again)."""
    keys, others = [], []
    header = set(HEADER.splitlines())
    for line in text.splitlines():
        match = _MANAGED.fullmatch(line)
        apps = _scope(match["command"], match["name"]) if match else None
        if match and match["type"] in KEY_TYPES and apps is not None:
            key = PublicKey(match["type"], match["blob"])
            keys.append(AuthorizedKey(match["name"], key, apps))
        elif line.strip() and line not in header:
            others.append(line)
    return AuthorizedKeys(tuple(keys), tuple(others))


def _scope(command: str, name: str) -> tuple[str, ...] | None:
    """The apps of ``... ssh-serve NAME [--app APP]...`` (() for an admin key, as every
    line of 0.1 is); None when the command is not one dokuen writes for ``name``."""
    _, found, tail = command.partition(" ssh-serve ")  # the paths before hold no spaces
    words = tail.split(" ")
    if not found or words[0] != name:
        return None
    flags, apps = words[1::2], words[2::2]
    if len(flags) != len(apps) or any(flag != "--app" for flag in flags):
        return None
    try:
        return key_apps(apps)
    except InvalidName:
        return None


def render(entrypoint: Entrypoint, content: AuthorizedKeys) -> str:
    """The whole file: our header, the lines we did not write, then every managed key."""
    lines = [*content.others, *(render_line(entrypoint, key) for key in content.keys)]
    return HEADER + "".join(line + "\n" for line in lines)


# -- the shell ---------------------------------------------------------------------------


def fingerprint_with_ssh_keygen(key: PublicKey) -> str:
    """Have OpenSSH read the key, as sshd will; return its fingerprint.

    Raises:
        InvalidKey: ssh-keygen cannot read it, or sees another key than we do.
    """
    try:
        done = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", "-"],
            input=f"{key.type} {key.blob}\n",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        raise InvalidKey("ssh-keygen is not installed (apt install openssh-client)") from None
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) < 2:
        raise InvalidKey(f"ssh-keygen cannot read the key ({done.stderr.strip() or 'no output'})")
    if fields[1] != key.fingerprint:
        raise InvalidKey(f"ssh-keygen reads another key ({fields[1]}) than dokuen does")
    return fields[1]


def load(path: Path) -> AuthorizedKeys:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return AuthorizedKeys()


def save(path: Path, text: str, group: int | None = None) -> None:
    """Write the file atomically: its directory 0700, the file 0600 (sshd's StrictModes).
    With ``group`` (the ssh account's, when dokuend runs as root and the account is
    another user), the directory 0750 and the file 0640 of that group: sshd reads the file
    as the account that logs in, and StrictModes allows a root-owned file it may read."""
    mode = 0o700 if group is None else 0o750
    path.parent.mkdir(mode=mode, parents=True, exist_ok=True)
    os.chmod(path.parent, mode)
    write_atomic(path, text, mode=0o600 if group is None else 0o640)
    if group is not None:
        os.chown(path.parent, -1, group, follow_symlinks=False)
        os.chown(path, -1, group, follow_symlinks=False)


def add(path: Path, entrypoint: Entrypoint, new: AuthorizedKey, group: int | None = None) -> None:
    """Authorize ``new``; raises Conflict when its name or its key is already there."""
    save(path, render(entrypoint, load(path).add(new)), group)


def remove(path: Path, entrypoint: Entrypoint, name: str, group: int | None = None) -> None:
    """Take the key named ``name`` away; raises NotFound when there is none."""
    save(path, render(entrypoint, load(path).remove(name)), group)


def refresh(path: Path, entrypoint: Entrypoint, group: int | None = None) -> bool:
    """Write every managed line again for the current dokuenctl and socket (a reinstall
    may have moved them); returns True when the file changed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    content = parse(text)
    fresh = render(entrypoint, content)
    if not content.keys or fresh == text:
        return False
    save(path, fresh, group)
    return True
