"""A database backup as its target holds it: the keys of its objects, its manifest and the
record of its last verification. Pure: dumps.py does the I/O.

A backup of app ``blog`` taken at 2026-11-25 22:44:00 UTC is three objects (four when the
app has a certificate):

    blog/db/20261125T224400Z.dump           pg_dump's custom format (compressed)
    blog/db/20261125T224400Z.tls.json       the app's certificate, key, certs options and
                                            the ACME account key (tls/backups.py)
    blog/db/20261125T224400Z.json           its manifest, written last
    blog/db/20261125T224400Z.verified.json  the result of its last verification

A backup exists once its manifest does: the dump goes up first, so a listed backup always
has its dump, and a capture that fails leaves nothing listed. The manifest holds the dump's
size and SHA-256 (checked before any restore) and each table's row count in the dump's
snapshot (checked by a verification, which restores into a scratch database).
"""

import contextlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from dokuen import __version__
from dokuen.errors import DokuenError
from dokuen.names import check_app_name, check_backup_id

MANIFEST_FORMAT = 1
_MANIFEST_KEYS = re.compile(r"(?P<id>[0-9]{8}T[0-9]{6}Z)\.json")


class BackupError(DokuenError):
    """A capture, restore or verification failed; nothing half-done is left as a backup."""


def new_id(now: datetime) -> str:
    """``20261125T224400Z``: the UTC time, to the second (sorts as it reads)."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def dump_key(app: str, backup_id: str) -> str:
    return f"{check_app_name(app)}/db/{check_backup_id(backup_id)}.dump"


def manifest_key(app: str, backup_id: str) -> str:
    return f"{check_app_name(app)}/db/{check_backup_id(backup_id)}.json"


def verified_key(app: str, backup_id: str) -> str:
    return f"{check_app_name(app)}/db/{check_backup_id(backup_id)}.verified.json"


def certificate_key(app: str, backup_id: str) -> str:
    return f"{check_app_name(app)}/db/{check_backup_id(backup_id)}.tls.json"


def backup_ids(keys: list[str], app: str) -> list[str]:
    """The ids of complete backups (those with a manifest) among ``keys``, oldest first."""
    prefix = f"{app}/db/"
    found = []
    for key in keys:
        match = key.startswith(prefix) and _MANIFEST_KEYS.fullmatch(key.removeprefix(prefix))
        if match:
            found.append(match["id"])
    return sorted(found)


@dataclass(frozen=True)
class Manifest:
    app: str
    id: str
    created: str  # ISO 8601, UTC
    release: str | None  # the app's release when it was taken
    database: str
    size: int
    sha256: str
    server_version: str
    pg_dump_version: str
    tables: dict[str, int] = field(default_factory=dict)  # "schema.table": rows
    certificate_sha256: str | None = None  # of ID.tls.json, when the app had a certificate
    format: int = MANIFEST_FORMAT
    dokuen_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, key: str) -> "Manifest":
        """Raises BackupError naming ``key`` when it is not a manifest we can read."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
                raise ValueError("unknown format")
            known = {f.name for f in fields(cls)}  # later versions may add fields
            manifest = cls(**{key: value for key, value in data.items() if key in known})
            check_app_name(manifest.app)
            check_backup_id(manifest.id)
            for digest in (manifest.sha256, manifest.certificate_sha256 or "0" * 64):
                if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                    raise ValueError("bad sha256")
            if not all(isinstance(v, int) for v in manifest.tables.values()):
                raise ValueError("bad row counts")
        except (ValueError, TypeError, DokuenError) as exc:
            raise BackupError(f"{key} is not a backup manifest dokuen can read ({exc})") from None
        return manifest


@dataclass(frozen=True)
class Verification:
    id: str
    ok: bool
    checked: str  # ISO 8601, UTC
    seconds: float
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Verification | None":
        with contextlib.suppress(ValueError, TypeError):
            return cls(**json.loads(text))
        return None


def compare_tables(expected: dict[str, int], found: dict[str, int]) -> list[str]:
    """What differs between the manifest's row counts and a restored database's."""
    problems = []
    for table in sorted(expected.keys() - found.keys()):
        problems.append(f"table {table} is missing")
    for table in sorted(found.keys() - expected.keys()):
        problems.append(f"table {table} is not in the manifest")
    for table in sorted(expected.keys() & found.keys()):
        if expected[table] != found[table]:
            problems.append(
                f"table {table} has {found[table]} rows, the manifest says {expected[table]}"
            )
    return problems


def summary(manifest: Manifest, verification: Verification | None) -> dict[str, Any]:
    """One backup as ``backups --json`` shows it."""
    return {
        **asdict(manifest),
        "rows": sum(manifest.tables.values()),
        "verified": None if verification is None else asdict(verification),
    }
