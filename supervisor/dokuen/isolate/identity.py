"""Which uids a Dokuen home and its apps get.

Each home claims a block of ``BLOCK_SIZE`` uids in a machine-wide registry (one file per
block, made with O_EXCL, holding the home's path), so two dokuends with different homes never
share a uid. Inside its block a home hands each app two uids, in creation order and never
twice: one its processes run as (its gid is the same number), one its builds run as.

    /var/lib/dokuen-uid-blocks/N      the home that holds block N
    $DOKUEN_HOME/uid-block            N, the home's own record of its block
    $DOKUEN_HOME/uids/SERIAL          the app that got serial SERIAL (kept after a destroy)
    $DOKUEN_HOME/apps/APP/identity    {"serial": .., "uid": .., "gid": .., "build_uid": ..}

The pure half (block choice, uids of a serial) is plain functions; the rest is blocking
file I/O that the daemon runs off its event loop.
"""

import contextlib
import fcntl
import importlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from dokuen.errors import Conflict, SettingsError
from dokuen.store import write_atomic

REGISTRY = Path("/var/lib/dokuen-uid-blocks")
BLOCK_SIZE = 65536
# Above the build uids of Dokuen 0.1 (2100000000-2100065535) and below 2**31, which some
# tools still read as a signed number; far from login users and the subordinate ids of
# containers (100000 and up).
FIRST_UID = 2100065536
BLOCKS = (2**31 - FIRST_UID) // BLOCK_SIZE
APPS_PER_BLOCK = BLOCK_SIZE // 2  # two uids an app


@dataclass(frozen=True)
class UidBlock:
    index: int

    @property
    def first(self) -> int:
        return FIRST_UID + self.index * BLOCK_SIZE

    @property
    def last(self) -> int:
        return self.first + BLOCK_SIZE - 1

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.first <= uid <= self.last


@dataclass(frozen=True)
class AppIdentity:
    """The uids of one app: ``uid``/``gid`` for its processes, ``build_uid`` for its builds
    (whose gid is the same number)."""

    serial: int
    uid: int
    gid: int
    build_uid: int


def home_digest(home: Path) -> bytes:
    """The SHA-256 of a home's path. Through Python's own SHA-256 where it has one:
    ``hashlib`` prefers OpenSSL's, and loading libcrypto for this one hash at start would
    cost the daemon 3 MiB resident for its whole life (docs/benchmarks.md, workload 3)."""
    data = str(home).encode("utf-8", "surrogateescape")
    for name in ("_sha2", "_sha256"):  # its name from Python 3.12 on, and before
        try:
            own = importlib.import_module(name)
        except ImportError:
            continue
        return bytes(own.sha256(data).digest())
    import hashlib  # noqa: PLC0415 (a Python built without its own hashes)

    return hashlib.sha256(data).digest()


def preferred_block(home: Path, blocks: int = BLOCKS) -> int:
    """The block a home tries first: from a hash of its path, so that homes rarely probe."""
    return int.from_bytes(home_digest(home)[:8], "big") % blocks


def probe_order(home: Path, blocks: int = BLOCKS) -> Iterator[int]:
    """Every block once: the preferred one, then onward, wrapping around."""
    first = preferred_block(home, blocks)
    for step in range(blocks):
        yield (first + step) % blocks


def identity_of(block: UidBlock, serial: int) -> AppIdentity:
    """The uids of the app with ``serial`` (0, 1, ...) in ``block``."""
    if not 0 <= serial < APPS_PER_BLOCK:
        raise Conflict(
            f"the uid block {block.first}-{block.last} of this home has given out all its "
            f"{APPS_PER_BLOCK} app uids (start a new DOKUEN_HOME)"
        )
    uid = block.first + 2 * serial
    return AppIdentity(serial, uid, uid, uid + 1)


# -- the machine-wide registry ---------------------------------------------------------


def _holder(registry: Path, index: int) -> str | None:
    try:
        return (registry / str(index)).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def _recorded_block(home: Path) -> int | None:
    """The block ``home`` says it holds, or None."""
    try:
        return int((home / "uid-block").read_text(encoding="ascii"))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None


def _stale(holder: str, index: int) -> bool:
    """A claim whose home is gone (or moved, or now holds another block)."""
    return _recorded_block(Path(holder)) != index


def _claim(registry: Path, index: int, home: Path) -> bool:
    """Make ``home`` the holder of block ``index``; False when a live home holds it."""
    path = registry / str(index)
    holder = _holder(registry, index)
    if holder == str(home):
        return True
    if holder is not None:
        if not _stale(holder, index):
            return False
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"{home}\n")
    return True


def claim_block(home: Path, registry: Path = REGISTRY, blocks: int = BLOCKS) -> UidBlock:
    """The uid block of ``home``: the one it recorded, else the first free one in its
    probe order, claimed in ``registry`` and recorded in the home. Raises SettingsError when
    the home's recorded block belongs to another live home (a copied home), Conflict when
    every block is taken."""
    registry.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = os.open(registry / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # claims and take-overs, one home at a time
        recorded = _recorded_block(home)
        if recorded is not None and 0 <= recorded < blocks:
            if not _claim(registry, recorded, home):
                raise SettingsError(
                    f"{home}/uid-block names uid block {recorded}, which "
                    f"{_holder(registry, recorded)} holds ({registry}/{recorded}); a copied "
                    "home must not share uids: delete its uid-block file and its apps' "
                    "identity files to give it new ones"
                )
            return UidBlock(recorded)
        for index in probe_order(home, blocks):
            if _claim(registry, index, home):
                write_atomic(home / "uid-block", f"{index}\n", mode=0o644)
                return UidBlock(index)
    finally:
        os.close(lock)
    raise Conflict(f"every uid block in {registry} is taken (remove the files of old homes)")


# -- apps within the home's block -------------------------------------------------------


def allocate(home: Path, block: UidBlock, app: str) -> AppIdentity:
    """A new identity for ``app``: the next serial after every one ever given in this home
    (records stay after a destroy, so a re-created app never gets an old uid back)."""
    records = home / "uids"
    records.mkdir(mode=0o700, exist_ok=True)
    taken = [int(entry.name) for entry in records.iterdir() if entry.name.isdigit()]
    serial = max(taken, default=-1) + 1
    while True:
        identity = identity_of(block, serial)
        try:
            fd = os.open(records / str(serial), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another allocation won this serial: take the next
            serial += 1
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"{app}\n")
        return identity


def read_identity(file: Path) -> AppIdentity | None:
    """The identity recorded in ``file``, or None when there is none (or it is garbled)."""
    with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
        data = json.loads(file.read_text(encoding="utf-8"))
        return AppIdentity(
            int(data["serial"]), int(data["uid"]), int(data["gid"]), int(data["build_uid"])
        )
    return None


def write_identity(file: Path, identity: AppIdentity) -> None:
    write_atomic(file, json.dumps(asdict(identity)) + "\n", mode=0o600)
