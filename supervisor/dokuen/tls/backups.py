"""An app's certificate in the backup target: ``APP/tls/ID.json`` holds the certificate
chain, its key, the app's certs options and the ACME account key (secrets, as the database
dumps beside it are). Stored after every new certificate when ``DOKUEN_BACKUP_URL`` is set,
and by ``certs:backup``; ``certs:restore`` serves one again at once. The 5 newest are kept.

A database backup (``backups:capture``, a schedule) carries the same kit as
``APP/db/ID.tls.json`` beside its dump, its SHA-256 in the backup's manifest: ``encode`` and
``decode`` are that file's bytes.

Blocking storage and file I/O: the daemon calls these in a worker thread."""

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dokuen.backup.schedule import unique_id
from dokuen.backup.storage import Storage, sha256_of
from dokuen.errors import DokuenError, NotFound

KIND = "tls"
KEEP = 5
FIELDS = ("cert", "key", "source", "options", "account_key")


@dataclass(frozen=True)
class Kit:
    cert: str
    key: str
    source: str
    options: dict[str, Any]
    account_key: str | None


def encode(kit: Kit) -> bytes:
    return json.dumps({field: getattr(kit, field) for field in FIELDS}).encode()


def decode(data: bytes, label: str) -> Kit:
    """The kit in ``data``; DokuenError naming ``label`` when it is not one."""
    try:
        parsed = json.loads(data)
        kit = Kit(**{field: parsed[field] for field in FIELDS})
        if not (isinstance(kit.cert, str) and isinstance(kit.key, str)):
            raise TypeError("the certificate and key are not text")
        if not isinstance(kit.options, dict):
            raise TypeError("the options are not an object")
        return kit
    except (ValueError, KeyError, TypeError) as exc:
        raise DokuenError(f"{label} is damaged ({exc})") from exc


def _ids(storage: Storage, app: str) -> list[str]:
    prefix = f"{app}/{KIND}/"
    return sorted(k[len(prefix) : -5] for k in storage.keys(prefix) if k.endswith(".json"))


def store(storage: Storage, app: str, kit: Kit, now: datetime, scratch: Path) -> str:
    """Put the kit in the target; return its key. Older kits beyond KEEP are deleted."""
    taken = _ids(storage, app)
    key = f"{app}/{KIND}/{unique_id(now, taken)}.json"
    scratch.mkdir(parents=True, exist_ok=True)
    import tempfile  # noqa: PLC0415 (0.6 MiB: not at start)

    with tempfile.NamedTemporaryFile("w", dir=scratch, prefix="tls-", suffix=".json") as file:
        file.write(encode(kit).decode())  # mode 0600
        file.flush()
        storage.put(key, Path(file.name), sha256_of(Path(file.name)))
    for old in _ids(storage, app)[:-KEEP]:
        storage.delete(f"{app}/{KIND}/{old}.json")
    return key


def fetch(storage: Storage, app: str, backup: str | None, scratch: Path) -> tuple[str, Kit]:
    """The kit ``backup`` (default: the newest) of the app, and its ID."""
    ids = _ids(storage, app)
    if not ids:
        raise NotFound(f"no certificate of {app} in {storage.url} (certs:backup {app})")
    backup = backup or ids[-1]
    if backup not in ids:
        raise NotFound(f"no certificate backup {backup!r} of {app} (there are: {', '.join(ids)})")
    scratch.mkdir(parents=True, exist_ok=True)
    import tempfile  # noqa: PLC0415 (0.6 MiB: not at start)

    with tempfile.NamedTemporaryFile(dir=scratch, prefix="tls-") as file:
        storage.get(f"{app}/{KIND}/{backup}.json", Path(file.name))
        data = Path(file.name).read_bytes()
    return backup, decode(data, f"certificate backup {backup} of {app}")
