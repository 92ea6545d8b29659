"""Backups in an S3 bucket (``s3://bucket/prefix``): AWS itself or a compatible store (MinIO,
Garage, Backblaze B2, ...) at ``DOKUEN_BACKUP_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``).

Credentials are the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``) from the mapping the daemon
gives (its environment and ``dokuend.env``); without them boto3's own chain applies
(``~/.aws``, an instance role).

An object is complete or absent: a file up to one part is read whole, its SHA-256 compared,
then sent in one PUT with its MD5 (the store refuses bytes that changed on the way); a larger
one goes as a multipart upload that is completed only after every part was accepted and the
SHA-256 of all of them matched, and is aborted otherwise. S3 never lists an unfinished
multipart upload as an object. The SHA-256 travels as object metadata, and ``get`` checks it.

Importing this module imports boto3 (slow): targets.open_storage imports it only when a
target is an S3 URL, and dokuenctl never does.
"""

import base64
import contextlib
import hashlib
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
from botocore.config import Config

from dokuen.backup.storage import StorageError, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MIB = 1 << 20
MIN_PART = 5 * MIB  # S3's smallest part (but the last)
MAX_PARTS = 10_000
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: the hex digest of the whole object
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_READ_CHUNK = MIB

# Not found, refused, unreachable: what the store said, in words that name the fix.
_MISSING_BUCKET = ("NoSuchBucket",)
_DENIED = (
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "403",
)
_MISSING_KEY = ("NoSuchKey", "404", "NotFound")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``.

    Raises:
        StorageError: not an S3 URL, a bucket name S3 would refuse, or a prefix with empty,
        ``.`` or ``..`` parts.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or parts.query or parts.fragment:
        raise StorageError(f"{url!r} is not an S3 URL like s3://bucket/prefix")
    if not BUCKET.fullmatch(parts.netloc):
        raise StorageError(
            f"{url!r}: {parts.netloc!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')"
        )
    prefix = parts.path.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except StorageError:
            raise StorageError(f"{url!r}: invalid prefix {prefix!r}") from None
    return parts.netloc, prefix


def _endpoint_shown(endpoint: str | None) -> str:
    """The endpoint without anything a user may have put in its URL (a password)."""
    if endpoint is None:
        return "AWS S3"
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


class S3Storage:
    """The Storage protocol (storage.py) on an S3 bucket, every key under ``prefix/``.

    Constructing it does nothing: the client is made on first use (in the worker thread
    that first uses it).
    """

    def __init__(
        self,
        url: str,
        bucket: str,
        prefix: str,
        environ: Mapping[str, str],
        *,
        part_size: int = 8 * MIB,
        attempts: int = 3,
    ) -> None:
        """``environ`` holds the AWS variables and the endpoint; ``part_size`` (at least
        5 MiB) is the size of each part of a multipart upload, and of the largest file
        sent in one PUT; ``attempts`` is how often one request is tried."""
        if part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self._environ = dict(environ)
        self._attempts = attempts
        self.endpoint = (
            self._environ.get("DOKUEN_BACKUP_ENDPOINT_URL")
            or self._environ.get("AWS_ENDPOINT_URL_S3")
            or self._environ.get("AWS_ENDPOINT_URL")
            or None
        )
        self._client_lock = threading.Lock()
        self._client: S3Client | None = None

    # -- the client ------------------------------------------------------------------

    def client(self) -> "S3Client":
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> "S3Client":
        env = self._environ
        if self.endpoint is not None and urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise StorageError(
                f"the S3 endpoint {_endpoint_shown(self.endpoint)!r} is not an http:// or "
                "https:// URL (check DOKUEN_BACKUP_ENDPOINT_URL)"
            )
        config = Config(
            connect_timeout=10,
            read_timeout=60,
            retries={"mode": "standard", "max_attempts": self._attempts},
            # S3 compatibles know path-style addressing, not always bucket host names.
            s3={"addressing_style": "path"} if self.endpoint else None,
            # Only the checksums we send (MD5, SHA-256 metadata): newer botocore adds CRC
            # headers by default, which some S3 compatibles refuse.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # The endpoint is ours to choose (from `environ`), not botocore's reading of
            # os.environ or ~/.aws/config.
            ignore_configured_endpoint_urls=True,  # type: ignore[call-arg]  # newer than the stubs
        )
        session = boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        )
        try:
            return session.client("s3", endpoint_url=self.endpoint, config=config)
        except (ValueError, botocore.exceptions.BotoCoreError) as exc:
            raise StorageError(f"cannot use {self.url}: {exc}") from None

    def _name(self, key: str) -> str:
        """The object name of ``key``: under the URL's prefix."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _failure(self, exc: Exception, doing: str, key: str | None = None) -> StorageError:
        """A StorageError for what boto3 raised: the thing, the reason, the fix; no secret
        (boto3's messages carry the request's target and the store's words, not keys)."""
        where = f"{self.url} (at {_endpoint_shown(self.endpoint)})"
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING_BUCKET:
                return StorageError(
                    f"{where}: no such bucket {self.bucket!r} (create it, or fix DOKUEN_BACKUP_URL)"
                )
            if code in _DENIED or status == 403:
                return StorageError(
                    f"{where}: access denied while trying to {doing} ({code}; check "
                    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's policy)"
                )
            if key is not None and (code in _MISSING_KEY or status == 404):
                return StorageError(f"{self.url} has no {key}")
            message = str(error.get("Message", "")) or code
            return StorageError(f"{where}: cannot {doing}: {message} ({code or status})")
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return StorageError(
                f"{where}: no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "in dokuend.env or dokuend's environment)"
            )
        if isinstance(exc, botocore.exceptions.EndpointConnectionError | ConnectionError):
            return StorageError(
                f"{where}: cannot reach the S3 endpoint to {doing} (is it running? check "
                "DOKUEN_BACKUP_ENDPOINT_URL)"
            )
        return StorageError(f"{where}: cannot {doing}: {exc}")

    # -- the Storage protocol --------------------------------------------------------

    def put(self, key: str, source: Path, sha256: str) -> None:
        name = self._name(key)
        client = self.client()
        try:
            size = source.stat().st_size
            part_size = self._part_size_for(size)
            with source.open("rb") as reader:
                if size <= part_size:
                    self._put_whole(client, key, name, reader.read(), sha256)
                else:
                    self._put_parts(client, key, name, reader, part_size, sha256)
        except OSError as exc:
            raise StorageError(f"cannot read {source}: {exc.strerror or exc}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._failure(exc, f"store {key}") from None
        except botocore.exceptions.ClientError as exc:
            raise self._failure(exc, f"store {key}") from None

    def _part_size_for(self, size: int) -> int:
        """The part size, grown in whole MiB so that no file needs more than 10,000 parts."""
        needed = -(-size // MAX_PARTS)
        return max(self.part_size, -(-needed // MIB) * MIB)

    def _mismatch(self, key: str) -> StorageError:
        return StorageError(
            f"{self.url}: {key} did not arrive whole (its SHA-256 differs); nothing was stored"
        )

    def _put_whole(self, client: "S3Client", key: str, name: str, data: bytes, sha256: str) -> None:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise self._mismatch(key)
        client.put_object(
            Bucket=self.bucket,
            Key=name,
            Body=data,
            ContentMD5=_md5(data),
            Metadata={SHA256_METADATA: sha256},
        )

    def _put_parts(
        self,
        client: "S3Client",
        key: str,
        name: str,
        reader: BinaryIO,
        part_size: int,
        sha256: str,
    ) -> None:
        upload = client.create_multipart_upload(
            Bucket=self.bucket, Key=name, Metadata={SHA256_METADATA: sha256}
        )
        upload_id = upload["UploadId"]
        completed = False
        try:
            digest = hashlib.sha256()
            parts: list[CompletedPartTypeDef] = []
            for number, data in enumerate(_blocks(reader, part_size), start=1):
                digest.update(data)
                answer = client.upload_part(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentMD5=_md5(data),
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            if digest.hexdigest() != sha256:
                raise self._mismatch(key)
            client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            completed = True
        finally:
            if not completed:
                # Parts of an upload nobody completes are kept (and billed) until aborted.
                # The first failure is the one to report.
                with contextlib.suppress(
                    botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError
                ):
                    client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)

    def get(self, key: str, destination: Path) -> None:
        name = self._name(key)
        client = self.client()
        try:
            answer = client.get_object(Bucket=self.bucket, Key=name)
            expected = answer.get("Metadata", {}).get(SHA256_METADATA)
            digest = hashlib.sha256()
            with destination.open("wb") as writer:
                for chunk in answer["Body"].iter_chunks(_READ_CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
        except OSError as exc:
            raise StorageError(f"cannot write {destination}: {exc.strerror or exc}") from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._failure(exc, f"read {key}", key) from None
        if expected is not None and digest.hexdigest() != expected:
            destination.unlink(missing_ok=True)
            raise StorageError(
                f"{self.url}: {key} came back different from what was stored (its SHA-256 "
                "differs); the copy was discarded"
            )

    def keys(self, prefix: str) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        found = []
        try:
            pages = self.client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    key = item["Key"].removeprefix(base)
                    if _plain(key):  # what Dokuen could have written, nothing else
                        found.append(key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._failure(exc, "list the backups") from None
        return sorted(found)

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            self.client().delete_object(Bucket=self.bucket, Key=name)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._failure(exc, f"delete {key}", key) from None


def _plain(key: str) -> bool:
    try:
        check_key(key)
    except StorageError:
        return False
    return True


def _md5(data: bytes) -> str:
    """Content-MD5: the store refuses a body whose MD5 differs (a transfer that went wrong).
    Not a security hash here, only S3's integrity check."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _blocks(reader: BinaryIO, size: int) -> Iterator[bytes]:
    while block := reader.read(size):
        yield block


def open_s3(url: str, environ: Mapping[str, str]) -> S3Storage:
    """The S3Storage for ``s3://bucket/prefix``; raises StorageError for a bad URL."""
    bucket, prefix = parse_s3_url(url)
    return S3Storage(url, bucket, prefix, environ)
