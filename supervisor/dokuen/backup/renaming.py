"""What ``apps:rename`` does to an app's backups: every object under ``OLD/`` in the backup
target moves to ``NEW/`` (so ``backups NEW`` lists them and a restore needs no ``--force``),
each manifest saying the new name. Blocking I/O: the daemon runs it in a worker thread.

A backup exists once its manifest does (manifest.py), so a move copies the dumps and bundles
first and the manifests last, then deletes the manifests first: a move cut short leaves every
backup listed under one name or the other, whole.
"""

import json
from pathlib import Path

from dokuen.backup.schedule import split_key
from dokuen.backup.storage import Storage, StorageError, sha256_of


def _is_manifest(key: str) -> bool:
    return split_key(key) is not None and key.endswith(".json") and key.count(".") == 1


def move_backups(storage: Storage, old: str, new: str, scratch: Path) -> int:
    """Move the backups of app ``old`` to ``new``; return how many objects moved. Raises
    StorageError (having moved nothing) when ``new`` already has an object of the same key,
    and whatever the target raises when it fails midway (the rest stays under ``old``)."""
    keys = storage.keys(f"{old}/")
    moves = {key: f"{new}/{key.removeprefix(f'{old}/')}" for key in keys}
    taken = sorted(set(moves.values()) & set(storage.keys(f"{new}/")))
    if taken:
        raise StorageError(
            f"the backup target already holds {taken[0]} (a former app named {new}?); the "
            f"backups of {old} stay under {old}/ (move or delete {new}/ there, then rename "
            "again)"
        )
    ordered = sorted(keys, key=_is_manifest)  # manifests last
    scratch.mkdir(parents=True, exist_ok=True)
    import tempfile  # noqa: PLC0415 (0.6 MiB: not at start)

    with tempfile.TemporaryDirectory(dir=scratch, prefix="backup-rename-") as work:
        copy = Path(work) / "object"
        for key in ordered:
            storage.get(key, copy)
            if _is_manifest(key):
                _rename_in_manifest(copy, old, new)
            storage.put(moves[key], copy, sha256_of(copy))
            copy.unlink()
    for key in sorted(keys, key=lambda key: not _is_manifest(key)):  # manifests first
        storage.delete(key)
    return len(keys)


def _rename_in_manifest(path: Path, old: str, new: str) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not one dokuen can read: moved as it is
    if isinstance(data, dict) and data.get("app") == old:
        data["app"] = new
        data.setdefault("renamed_from", old)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
