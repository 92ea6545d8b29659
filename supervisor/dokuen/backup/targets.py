"""Which backup target ``DOKUEN_BACKUP_URL`` names: a directory (storage.py) or S3 (s3.py).

Apart from storage.py so that s3.py can build on storage.py's types without the two
importing each other; boto3 is imported only when an S3 target is opened.
"""

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from dokuen.backup.storage import DirectoryStorage, Storage, StorageError


def open_storage(url: str, environ: Mapping[str, str]) -> Storage:
    """The store ``DOKUEN_BACKUP_URL`` names; ``environ`` holds the AWS variables and the
    endpoint of an S3 target (s3.py). Raises StorageError for an unknown kind or bad URL."""
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return DirectoryStorage(url, Path(parts.path))
    if parts.scheme == "s3" and parts.netloc:
        from dokuen.backup.s3 import open_s3  # noqa: PLC0415 (boto3 is slow to import)

        return open_s3(url, environ)
    raise StorageError(
        f"DOKUEN_BACKUP_URL={url!r} is not a backup target (use file:///srv/backups or "
        "s3://bucket/prefix)"
    )
