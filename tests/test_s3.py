"""The S3 backup target against a real S3 endpoint on loopback (moto's server): complete
objects or none, multipart uploads that are completed only when their SHA-256 matched."""

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from dokuen.backup.s3 import MIB, S3Storage, parse_s3_url
from dokuen.backup.storage import StorageError, sha256_of
from dokuen.backup.targets import open_storage
from tests.motoserver import CREDENTIALS, MotoServer, free_port, moto_server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as running:
        yield running


@pytest.fixture
def s3(server: MotoServer) -> "S3Client":
    """A plain boto3 client, to look behind S3Storage's back."""
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    return client


@pytest.fixture
def bucket(s3: "S3Client", request: pytest.FixtureRequest) -> str:
    """A new empty bucket for each test."""
    name = "t-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    s3.create_bucket(Bucket=name)
    return name


def storage(server: MotoServer, bucket: str, prefix: str = "dokuen") -> S3Storage:
    return S3Storage(f"s3://{bucket}/{prefix}", bucket, prefix, server.environ, part_size=5 * MIB)


def write(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_put_lists_gets_and_deletes_under_the_prefix(
    server: MotoServer, bucket: str, s3: "S3Client", tmp_path: Path
) -> None:
    store = open_storage(f"s3://{bucket}/dokuen", server.environ)
    assert isinstance(store, S3Storage)
    source = write(tmp_path / "dump", 3_000_000)
    store.put("blog/db/20261125T030000Z.dump", source, sha256_of(source))
    store.put("blog/db/20261125T030000Z.json", write(tmp_path / "m", 10), sha256_of(tmp_path / "m"))
    s3.put_object(Bucket=bucket, Key="elsewhere/blog/x", Body=b"not ours")
    assert store.keys("blog/") == ["blog/db/20261125T030000Z.dump", "blog/db/20261125T030000Z.json"]
    assert store.keys("notes/") == []
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="dokuen/")["Contents"]]
    assert names == ["dokuen/blog/db/20261125T030000Z.dump", "dokuen/blog/db/20261125T030000Z.json"]
    copy = tmp_path / "copy"
    store.get("blog/db/20261125T030000Z.dump", copy)
    assert copy.read_bytes() == source.read_bytes()
    store.delete("blog/db/20261125T030000Z.dump")
    store.delete("blog/db/20261125T030000Z.dump")  # gone already: no error
    assert store.keys("") == ["blog/db/20261125T030000Z.json"]
    with pytest.raises(StorageError, match=r"has no blog/db/20261125T030000Z\.dump"):
        store.get("blog/db/20261125T030000Z.dump", tmp_path / "again")


def test_a_large_object_goes_up_in_parts_and_comes_back_whole(
    server: MotoServer, bucket: str, s3: "S3Client", tmp_path: Path
) -> None:
    store = storage(server, bucket)
    source = write(tmp_path / "big", 12 * MIB + 123)
    store.put("blog/repo/1.bundle", source, sha256_of(source))
    head = s3.head_object(Bucket=bucket, Key="dokuen/blog/repo/1.bundle")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    assert head["Metadata"] == {"sha256": sha256_of(source)}
    copy = tmp_path / "copy"
    store.get("blog/repo/1.bundle", copy)
    assert sha256_of(copy) == sha256_of(source)


@pytest.mark.parametrize("size", [1000, 11 * MIB])
def test_a_checksum_mismatch_stores_nothing_and_leaves_no_upload_behind(
    server: MotoServer, bucket: str, s3: "S3Client", tmp_path: Path, size: int
) -> None:
    store = storage(server, bucket)
    source = write(tmp_path / "dump", size)
    with pytest.raises(StorageError, match=r"did not arrive whole .* nothing was stored"):
        store.put("blog/db/1.dump", source, "0" * 64)
    assert store.keys("") == []
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_copy_that_differs_from_what_was_stored_is_refused(
    server: MotoServer, bucket: str, s3: "S3Client", tmp_path: Path
) -> None:
    s3.put_object(
        Bucket=bucket, Key="dokuen/blog/db/1.dump", Body=b"changed", Metadata={"sha256": "0" * 64}
    )
    copy = tmp_path / "copy"
    with pytest.raises(StorageError, match="came back different"):
        storage(server, bucket).get("blog/db/1.dump", copy)
    assert not copy.exists()


def test_a_missing_bucket_is_named_and_no_secret_is_shown(
    server: MotoServer, tmp_path: Path
) -> None:
    store = storage(server, "no-such-bucket")
    source = write(tmp_path / "dump", 10)
    for action in (
        lambda: store.keys(""),
        lambda: store.put("blog/db/1.dump", source, sha256_of(source)),
    ):
        with pytest.raises(StorageError, match="no such bucket 'no-such-bucket'") as caught:
            action()
        assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)
        assert CREDENTIALS["AWS_ACCESS_KEY_ID"] not in str(caught.value)


def test_refused_credentials_are_named_and_not_shown(tmp_path: Path) -> None:
    # moto's server with its IAM checks on: it knows no access key at all.
    with moto_server(tmp_path / "moto.log", INITIAL_NO_AUTH_ACTION_COUNT="0") as strict:
        store = S3Storage("s3://bucket/x", "bucket", "x", strict.environ, attempts=1)
        with pytest.raises(StorageError, match="access denied while trying to list") as caught:
            store.keys("")
    assert "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in str(caught.value)
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)
    assert CREDENTIALS["AWS_ACCESS_KEY_ID"] not in str(caught.value)


def test_an_endpoint_that_does_not_answer_is_named(tmp_path: Path) -> None:
    endpoint = f"http://user:hunter2@127.0.0.1:{free_port()}"
    environ = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
    store = S3Storage("s3://bucket/x", "bucket", "x", environ, attempts=1)
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint") as caught:
        store.keys("")
    assert "hunter2" not in str(caught.value)
    assert "at http://127.0.0.1:" in str(caught.value)


def test_no_credentials_is_said_plainly(server: MotoServer) -> None:
    environ = {"DOKUEN_BACKUP_ENDPOINT_URL": server.endpoint}
    script = (
        "import sys\n"
        "from dokuen.backup.s3 import S3Storage\n"
        "from dokuen.backup.storage import StorageError\n"
        f"store = S3Storage('s3://b/x', 'b', 'x', {environ!r}, attempts=1)\n"
        "try: store.keys('')\n"
        "except StorageError as exc: print(exc)\n"
    )
    # In a clean environment: boto3's own chain must find nothing (no ~/.aws, no instance).
    clean = {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=clean, capture_output=True, text=True, check=True
    )
    assert "no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in done.stdout


@pytest.mark.parametrize(
    ("url", "expected"),
    [("s3://bucket/a/b/", ("bucket", "a/b")), ("s3://my.bucket-1", ("my.bucket-1", ""))],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    "url", ["s3://Bucket/x", "s3://b/x", "s3://bucket/../x", "s3://bucket/a//b", "s3://bu_ck/x"]
)
def test_bad_s3_urls_are_refused(url: str) -> None:
    with pytest.raises(StorageError, match=r"bucket name|invalid prefix"):
        open_storage(url, {})


def test_dokuenctl_and_the_storage_module_do_not_import_boto3() -> None:
    script = (
        "import sys, dokuen.cli.dokuenctl, dokuen.backup.targets\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
