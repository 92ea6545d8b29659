"""Where backups are kept: ``DOKUEN_BACKUP_URL``, a directory (``file:///srv/backups``) or an
S3 bucket and prefix (``s3://bucket/prefix``).

Every store is blocking I/O (the daemon calls it in a worker thread) and keeps one promise:
an object is visible under its key only once all of it was written and its SHA-256 matched.
A half-written upload is never listed.
"""

import os
import shutil
from pathlib import Path
from typing import Protocol

from dokuen.errors import DokuenError

_CHUNK = 1 << 20


class StorageError(DokuenError):
    """The backup target refused or failed an operation; the message names it and the fix."""


class Storage(Protocol):
    url: str

    def put(self, key: str, source: Path, sha256: str) -> None:
        """Store the file ``source`` as ``key``, or raise StorageError and store nothing."""

    def get(self, key: str, destination: Path) -> None:
        """Copy ``key`` into the file ``destination``; NotFound-like StorageError if absent."""

    def keys(self, prefix: str) -> list[str]:
        """Every complete object whose key starts with ``prefix``, sorted."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is already gone)."""


def sha256_of(path: Path) -> str:
    import hashlib  # noqa: PLC0415 (libcrypto, 3 MiB: not at start)

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _sync_directory(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def check_key(key: str) -> str:
    """Keys are made by Dokuen (``APP/db/ID.dump``): refuse anything that could climb out."""
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise StorageError(f"invalid backup key {key!r}")
    return key


class DirectoryStorage:
    """Backups in a local directory (``file:///srv/backups``): written to a hidden temporary
    file in the same directory, fsynced, checked, then renamed into place."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, source: Path, sha256: str) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{os.urandom(16).hex()}.partial")
            try:
                with source.open("rb") as reader, temporary.open("wb") as writer:
                    os.fchmod(writer.fileno(), 0o600)  # a database's dump: for dokuend only
                    shutil.copyfileobj(reader, writer, _CHUNK)
                    writer.flush()
                    os.fsync(writer.fileno())
                if sha256_of(temporary) != sha256:
                    raise StorageError(
                        f"{self.url}: {key} did not arrive whole (its SHA-256 differs); "
                        "nothing was stored"
                    )
                temporary.replace(target)
                _sync_directory(target.parent)  # the rename itself survives a power cut
            finally:
                temporary.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot write {key} to {self.url}: {exc.strerror or exc} (check that the "
                "directory exists and dokuend may write to it)"
            ) from None

    def get(self, key: str, destination: Path) -> None:
        try:
            shutil.copyfile(self._path(key), destination)
        except FileNotFoundError:
            raise StorageError(f"{self.url} has no {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key} from {self.url}: {exc}") from None

    def keys(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            raise StorageError(f"{self.url}: no such directory (create it first)")
        found = []
        try:
            for path in self.root.rglob("*"):
                key = path.relative_to(self.root).as_posix()
                hidden = any(part.startswith(".") for part in key.split("/"))
                if path.is_file() and not hidden and key.startswith(prefix):
                    found.append(key)
        except OSError as exc:
            raise StorageError(f"cannot list {self.url}: {exc}") from None
        return sorted(found)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {key} from {self.url}: {exc}") from None


def clear_leftovers(scratch: Path) -> None:
    """Remove the dumps and bundles a killed dokuend left half made in ``scratch`` (here,
    not in dumps.py: the daemon calls it at every start, before any backup is asked for)."""
    for leftover in scratch.glob("*-*"):
        if leftover.name.startswith(("backup-", "bundle-")):
            shutil.rmtree(leftover, ignore_errors=True)
