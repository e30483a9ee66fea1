"""S3-compatible object storage on boto3 (MinIO by default; any S3 service by endpoint)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from flts.settings import CommonSettings

CHUNK_BYTES = 8 * 1024 * 1024


class ObjectNotFound(LookupError):
    """The object behind a claim check is not there."""


@dataclass(frozen=True)
class StoredObject:
    uri: str
    sha256: str
    size_bytes: int


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"an s3 URI needs a bucket and a key: {uri!r}")
    return bucket, key


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _HashingReader(io.RawIOBase):
    """Wraps a stream so that what boto3 uploads is hashed and counted on the way through."""

    def __init__(self, stream: IO[bytes], limit: int | None) -> None:
        self._stream = stream
        self._limit = limit
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._stream.read(len(buffer))
        if not chunk:
            return 0
        self.size += len(chunk)
        if self._limit is not None and self.size > self._limit:
            raise ObjectTooLarge(self._limit)
        self.digest.update(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)


class ObjectTooLarge(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"object larger than the limit of {limit} bytes")
        self.limit = limit


class ObjectStore:
    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings
        self._client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            aws_access_key_id=settings.aws_access_key_id or None,
            aws_secret_access_key=settings.aws_secret_access_key.get_secret_value() or None,
            region_name=settings.aws_region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    def check_bucket(self, bucket: str) -> None:
        """Raise unless the bucket exists and these credentials reach it."""
        self._client.head_bucket(Bucket=bucket)

    def ensure_buckets(self, buckets: list[str] | None = None) -> None:
        for bucket in buckets or self.settings.buckets:
            try:
                self._client.head_bucket(Bucket=bucket)
            except ClientError as exc:
                if _status(exc) not in (403, 404):
                    raise
                try:
                    self._client.create_bucket(Bucket=bucket)
                except ClientError as create_exc:
                    code = create_exc.response.get("Error", {}).get("Code")
                    if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

    def put_bytes(self, uri: str, data: bytes, content_type: str = "application/octet-stream") -> StoredObject:
        bucket, key = split_uri(uri)
        self._client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        return StoredObject(uri, sha256_bytes(data), len(data))

    def put_json(self, uri: str, value: Any) -> StoredObject:
        return self.put_bytes(uri, json.dumps(value, indent=2, default=str).encode(), "application/json")

    def put_stream(self, uri: str, stream: IO[bytes], max_bytes: int | None = None) -> StoredObject:
        """Stream an upload (multipart for large bodies), hashing it; raises ObjectTooLarge past max_bytes."""
        bucket, key = split_uri(uri)
        reader = _HashingReader(stream, max_bytes)
        try:
            self._client.upload_fileobj(io.BufferedReader(reader, CHUNK_BYTES), bucket, key)
        except ObjectTooLarge:
            self.delete(uri)
            raise
        except Exception as exc:
            if isinstance(exc.__cause__, ObjectTooLarge) or "larger than the limit" in str(exc):
                self.delete(uri)
                raise ObjectTooLarge(max_bytes or 0) from exc
            raise
        return StoredObject(uri, reader.digest.hexdigest(), reader.size)

    @contextmanager
    def writer(self, uri: str) -> Iterator[ObjectWriter]:
        """A binary file to make an object with as it is computed: its bytes go up as they are written (multipart
        past 8 MiB, a few parts in memory at most), hashed on the way. The object appears once the block ends; if
        the block raises, the upload is aborted and nothing is stored. The writer's `stored` says what was."""
        out = ObjectWriter(self, uri)
        try:
            yield out
        except BaseException:
            out.abort()
            raise
        out.finish()

    def get_tail(self, uri: str, size: int) -> bytes:
        """The object's last ``size`` bytes (all of it when it is shorter)."""
        bucket, key = split_uri(uri)
        try:
            return self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{size}")["Body"].read()
        except ClientError as exc:
            if _status(exc) == 404:
                raise ObjectNotFound(uri) from exc
            raise

    def get_bytes(self, uri: str) -> bytes:
        bucket, key = split_uri(uri)
        try:
            return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _status(exc) == 404:
                raise ObjectNotFound(uri) from exc
            raise

    def get_json(self, uri: str) -> Any:
        return json.loads(self.get_bytes(uri))

    def iter_chunks(self, uri: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        bucket, key = split_uri(uri)
        try:
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"]
        except ClientError as exc:
            if _status(exc) == 404:
                raise ObjectNotFound(uri) from exc
            raise
        yield from body.iter_chunks(chunk_bytes)

    def exists(self, uri: str) -> bool:
        bucket, key = split_uri(uri)
        try:
            self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    def list(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        paginator = self._client.get_paginator("list_objects_v2")
        objects: list[dict[str, Any]] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))
        return objects

    def folders(self, bucket: str, prefix: str = "") -> list[str]:
        """The names of the "folders" right under ``prefix`` (common prefixes up to the next '/')."""
        paginator = self._client.get_paginator("list_objects_v2")
        names: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            names.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
        return names

    def page(self, bucket: str, prefix: str, limit: int, after: str = "") -> tuple[list[dict[str, Any]], str | None]:
        """One page of keys under ``prefix`` after ``after`` (in key order); the key to continue after, if any."""
        answer = self._client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=limit, StartAfter=after)
        objects = answer.get("Contents", [])
        return objects, (objects[-1]["Key"] if answer.get("IsTruncated") and objects else None)

    def delete(self, uri: str) -> None:
        bucket, key = split_uri(uri)
        self._client.delete_object(Bucket=bucket, Key=key)

    def sha256_of(self, uri: str) -> str:
        return self.stored(uri).sha256

    def stored(self, uri: str) -> StoredObject:
        """An object's sha256 and size, read through once, a chunk at a time."""
        digest, size = hashlib.sha256(), 0
        for chunk in self.iter_chunks(uri):
            digest.update(chunk)
            size += len(chunk)
        return StoredObject(uri, digest.hexdigest(), size)


class WriteAborted(OSError):
    """An ObjectWriter's block raised: the upload stops and nothing is stored."""


class _PipeSource:
    """The reading end of an ObjectWriter's pipe, what the upload reads: its end is an error, not the object's end,
    once the writer was aborted."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "rb")
        self.aborted = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        if not chunk and self.aborted:
            raise WriteAborted("the object's writer failed: nothing is stored")
        return chunk

    def close(self) -> None:
        self._file.close()


class ObjectWriter:
    """What `ObjectStore.writer` yields: write, tell, flush (what pyarrow's writers need of a file). A thread uploads
    what the pipe carries (`put_stream`), so the writer waits whenever the upload is behind: memory stays bounded."""

    def __init__(self, store: ObjectStore, uri: str) -> None:
        read_fd, write_fd = os.pipe()
        self._source = _PipeSource(read_fd)
        self._sink = os.fdopen(write_fd, "wb")
        self._error: BaseException | None = None
        self.stored: StoredObject | None = None
        self.size = 0
        self._thread = threading.Thread(target=self._upload, args=(store, uri), name="object-writer", daemon=True)
        self._thread.start()

    def _upload(self, store: ObjectStore, uri: str) -> None:
        try:
            self.stored = store.put_stream(uri, self._source)  # type: ignore[arg-type]
        except BaseException as exc:
            self._error = exc
        finally:
            self._source.close()  # a writer still writing gets BrokenPipeError, then this error

    @property
    def closed(self) -> bool:
        return self._sink.closed

    def write(self, data: Any) -> int:
        try:
            written = self._sink.write(data)
        except BrokenPipeError:
            self._thread.join()
            raise OSError(f"the upload stopped: {self._error!r}") from self._error
        self.size += written
        return written

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._sink.flush()

    def finish(self) -> StoredObject:
        """Close the pipe, wait for the upload to complete; raise what stopped it."""
        self._close()
        if self._error is not None:
            raise self._error
        assert self.stored is not None
        return self.stored

    def abort(self) -> None:
        """Stop the upload: the pipe's end is an error, so the multipart upload is aborted and nothing is stored."""
        self._source.aborted = True
        self._close()

    def _close(self) -> None:
        with suppress(BrokenPipeError):  # the upload stopped first: its error says why
            self._sink.close()
        self._thread.join()


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
