"""Database backups in a backup target (storage.py): capture, list, restore, verify, fetch.
Each backup's objects, manifest and verification record are described in manifest.py."""

import contextlib
import dataclasses
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio

from dokuen.backup.manifest import (
    BackupError,
    Manifest,
    Verification,
    backup_ids,
    certificate_key,
    compare_tables,
    dump_key,
    manifest_key,
    new_id,
    verified_key,
)
from dokuen.backup.storage import Storage, StorageError, sha256_of
from dokuen.conninfo import ConnInfo
from dokuen.data.database import connect, create_scratch, drop_scratch, row_counts
from dokuen.errors import NotFound
from dokuen.events import get_logger
from dokuen.supervise.spawn import OsSpawner

log = get_logger()


class ChecksumMismatch(BackupError):
    """A dump whose bytes are not the ones its manifest describes."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Tools:
    """pg_dump and pg_restore, run through the daemon's spawner: an argv list (no shell),
    the login in ``PG*`` variables (no password in argv)."""

    pg_dump: str
    pg_restore: str
    spawner: OsSpawner
    workspace: Path  # $DOKUEN_HOME/tmp: dumps on their way in and out

    async def run(self, argv: list[str], login: ConnInfo | None = None) -> tuple[int, str]:
        env = {"PATH": os.defpath, "LC_ALL": "C", **(login.environ() if login else {})}
        self.workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
        status, output = await self.spawner.run(argv, self.workspace, env=env)
        return status, output.decode(errors="replace")

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private directory for one operation, removed with what it holds."""
        self.workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
        import tempfile  # noqa: PLC0415 (0.6 MiB: not at start)

        path = Path(tempfile.mkdtemp(prefix="backup-", dir=self.workspace))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def _last_lines(text: str, count: int = 3) -> str:
    """What a PostgreSQL tool said went wrong: its ``error:`` and ``detail:`` lines (its
    last lines if it wrote none)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    said = [line for line in lines if ": error: " in line or ": detail: " in line]
    return " ".join(said[:count] or lines[-count:])


class Backups:
    """The backups of every app in one target."""

    def __init__(self, storage: Storage, tools: Tools) -> None:
        self.storage = storage
        self.tools = tools

    # -- capture -----------------------------------------------------------------------

    async def capture(
        self, app: str, release: str | None, login: ConnInfo, certificate: bytes | None = None
    ) -> Manifest:
        """Dump the database ``login`` reaches and store it with its manifest, and with
        ``certificate`` (the app's HTTPS kit, secret as the dump is) when given.

        The row counts come from the dump's own snapshot: a transaction exports it, pg_dump
        dumps it, and the same transaction counts each table.

        Raises:
            StorageError: the target cannot be listed or written (before or after the dump).
            BackupError: pg_dump failed (the server stopped, ...); nothing was stored.
        """
        backup_id = await self._fresh_id(app)
        version = await self._pg_dump_version()
        with self.tools.scratch() as work:
            dump = work / f"{backup_id}.dump"
            async with connect(login) as conn:
                await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = await (
                    await conn.execute(
                        "SELECT pg_export_snapshot(), current_setting('server_version')"
                    )
                ).fetchone()
                assert row is not None
                snapshot, server_version = str(row[0]), str(row[1]).split()[0]
                argv = [
                    self.tools.pg_dump,
                    "--format=custom",
                    "--no-password",
                    f"--snapshot={snapshot}",
                    f"--file={dump}",
                ]
                status, output = await self.tools.run(argv, login)
                if status != 0:
                    raise BackupError(
                        f"the dump of {app}'s database failed (pg_dump exited with code "
                        f"{status}): {_last_lines(output)}; nothing was stored"
                    )
                tables = await row_counts(conn)
                await conn.execute("COMMIT")
            size = dump.stat().st_size
            digest = await anyio.to_thread.run_sync(sha256_of, dump)
            manifest = Manifest(
                app=app,
                id=backup_id,
                created=_now(),
                release=release,
                database=login.dbname,
                size=size,
                sha256=digest,
                server_version=server_version,
                pg_dump_version=version,
                tables=tables,
            )
            kit = None
            if certificate is not None:
                kit = work / "certificate.json"
                kit.write_bytes(certificate)
                kit.chmod(0o600)
                digest = await anyio.to_thread.run_sync(sha256_of, kit)
                manifest = dataclasses.replace(manifest, certificate_sha256=digest)
            await anyio.to_thread.run_sync(self._store, manifest, dump, kit, work)
        return manifest

    async def _fresh_id(self, app: str) -> str:
        """An id no backup of ``app`` has (one a second). Listing first also proves the
        target is there before anything is dumped."""
        taken = await anyio.to_thread.run_sync(self.storage.keys, f"{app}/db/")
        while True:
            backup_id = new_id(datetime.now(UTC))
            if dump_key(app, backup_id) not in taken and manifest_key(app, backup_id) not in taken:
                return backup_id
            await anyio.sleep(1.0 - time.time() % 1.0)

    async def _pg_dump_version(self) -> str:
        status, output = await self.tools.run([self.tools.pg_dump, "--version"])
        if status != 0:
            raise BackupError(f"{self.tools.pg_dump} --version failed: {_last_lines(output)}")
        match = re.search(r"\(PostgreSQL\) (\S+)", output)
        return match[1] if match else output.strip()

    def _store(self, manifest: Manifest, dump: Path, kit: Path | None, work: Path) -> None:
        """The dump (and certificate), then the manifest that makes it a backup; none of
        them if any fails."""
        self.storage.put(dump_key(manifest.app, manifest.id), dump, manifest.sha256)
        try:
            if kit is not None and manifest.certificate_sha256 is not None:
                key = certificate_key(manifest.app, manifest.id)
                self.storage.put(key, kit, manifest.certificate_sha256)
            record = work / "manifest.json"
            record.write_text(manifest.to_json(), encoding="utf-8")
            self.storage.put(manifest_key(manifest.app, manifest.id), record, sha256_of(record))
        except BaseException:
            for made in (certificate_key, dump_key):
                with contextlib.suppress(StorageError, OSError):
                    self.storage.delete(made(manifest.app, manifest.id))
            raise

    # -- reading -----------------------------------------------------------------------

    async def listing(self, app: str) -> list[tuple[Manifest, Verification | None]]:
        """Every complete backup of ``app``, oldest first, with its last verification."""
        return await anyio.to_thread.run_sync(self._list, app)

    def _list(self, app: str) -> list[tuple[Manifest, Verification | None]]:
        keys = self.storage.keys(f"{app}/db/")
        found = []
        for backup_id in backup_ids(keys, app):
            try:
                manifest = self._manifest(app, backup_id)
            except BackupError as exc:  # one bad file must not hide every other backup
                log.error("backup.manifest_unreadable", app=app, id=backup_id, error=str(exc))
                continue
            verification = None
            if verified_key(app, backup_id) in keys:
                verification = Verification.from_json(self._text(verified_key(app, backup_id)))
            found.append((manifest, verification))
        return found

    async def manifest(self, app: str, backup_id: str | None) -> Manifest:
        """The manifest of backup ``backup_id`` of ``app`` (its newest when None).

        Raises NotFound naming the backups there are."""
        return await anyio.to_thread.run_sync(self._find, app, backup_id)

    def _find(self, app: str, backup_id: str | None) -> Manifest:
        ids = backup_ids(self.storage.keys(f"{app}/db/"), app)
        if backup_id is None:
            if not ids:
                raise NotFound(
                    f"{app} has no backups in {self.storage.url} (take one: dokuenctl "
                    f"backups:capture {app})"
                )
            backup_id = ids[-1]
        elif backup_id not in ids:
            known = ", ".join(ids[-5:]) or "none"
            raise NotFound(f"{app} has no backup {backup_id} (its latest: {known})")
        return self._manifest(app, backup_id)

    def _manifest(self, app: str, backup_id: str) -> Manifest:
        key = manifest_key(app, backup_id)
        return Manifest.from_json(self._text(key), key)

    def _text(self, key: str) -> str:
        with self.tools.scratch() as work:
            self.storage.get(key, work / "object")
            return (work / "object").read_text(encoding="utf-8", errors="replace")

    def fetch(self, manifest: Manifest, destination: Path) -> None:
        """Copy the backup's dump to ``destination`` (blocking) and check it whole.

        Raises ChecksumMismatch when its bytes are not the ones the manifest describes."""
        key = dump_key(manifest.app, manifest.id)
        self.storage.get(key, destination)
        digest = sha256_of(destination)
        if digest != manifest.sha256:
            size = destination.stat().st_size
            raise ChecksumMismatch(
                f"backup {manifest.id} of {manifest.app} is corrupt: checksum mismatch, its "
                f"dump's SHA-256 is {digest[:16]}... ({size} bytes) but its manifest says "
                f"{manifest.sha256[:16]}... ({manifest.size} bytes); it was not used"
            )

    def fetch_certificate(self, manifest: Manifest) -> bytes | None:
        """The backup's certificate kit (blocking), checked against its manifest; None when
        the app had no certificate. Raises ChecksumMismatch when it was changed."""
        if manifest.certificate_sha256 is None:
            return None
        key = certificate_key(manifest.app, manifest.id)
        with self.tools.scratch() as work:
            self.storage.get(key, work / "certificate.json")
            digest = sha256_of(work / "certificate.json")
            data = (work / "certificate.json").read_bytes()
        if digest != manifest.certificate_sha256:
            raise ChecksumMismatch(
                f"backup {manifest.id} of {manifest.app} is corrupt: its certificate "
                f"({key}) has SHA-256 {digest[:16]}... but its manifest says "
                f"{manifest.certificate_sha256[:16]}...; nothing was restored"
            )
        return data

    # -- restore and verify ------------------------------------------------------------

    async def restore(
        self,
        manifest: Manifest,
        login: ConnInfo,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Restore the backup into the database ``login`` reaches, in one transaction:
        its tables are replaced, or (on any error) nothing changes. Objects made after
        the backup stay. ``before`` runs once the dump is here and checked, just before.

        Raises ChecksumMismatch or BackupError; the database is then as it was."""
        with self.tools.scratch() as work:
            dump = work / "backup.dump"
            await anyio.to_thread.run_sync(self.fetch, manifest, dump)
            await self._check_archive(dump)
            if before is not None:
                await before()
            await self._pg_restore(dump, login, clean=True)

    async def verify(self, manifest: Manifest, admin: ConnInfo, login: ConnInfo) -> Verification:
        """Check a backup for real and record the result beside it: its checksum, that
        pg_restore can read it, and that restored into a scratch database (owned by
        ``login``'s role, dropped again whatever happens) every table has the rows the
        manifest says."""
        began = time.monotonic()
        problems: list[str] = []
        with self.tools.scratch() as work:
            dump = work / "backup.dump"
            try:
                await anyio.to_thread.run_sync(self.fetch, manifest, dump)
                await self._check_archive(dump)
                scratch = await create_scratch(admin, login.user)
                try:
                    await self._pg_restore(dump, login.database(scratch), clean=False)
                    async with connect(login.database(scratch)) as conn:
                        found = await row_counts(conn)
                    problems = compare_tables(manifest.tables, found)
                finally:
                    with anyio.CancelScope(shield=True):
                        await drop_scratch(admin, scratch)
            except BackupError as exc:
                problems = [str(exc)]
            result = Verification(
                manifest.id, not problems, _now(), round(time.monotonic() - began, 2), problems
            )
            record = work / "verified.json"
            record.write_text(result.to_json(), encoding="utf-8")
            key = verified_key(manifest.app, manifest.id)
            await anyio.to_thread.run_sync(self.storage.put, key, record, sha256_of(record))
        return result

    async def _check_archive(self, dump: Path) -> None:
        status, output = await self.tools.run([self.tools.pg_restore, "--list", str(dump)])
        if status != 0:
            raise BackupError(f"pg_restore cannot read the dump: {_last_lines(output)}")

    async def _pg_restore(self, dump: Path, login: ConnInfo, *, clean: bool) -> None:
        argv = [
            self.tools.pg_restore,
            "--no-password",
            "--no-owner",  # the objects become the role's, whoever owned them before
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            *(["--clean", "--if-exists"] if clean else []),
            f"--dbname={login.dbname}",
            str(dump),
        ]
        status, output = await self.tools.run(argv, login)
        if status != 0:
            raise BackupError(
                f"pg_restore failed (exit code {status}), so nothing was changed: "
                f"{_last_lines(output)}"
            )
