"""ObjectStore.writer on a stand-in for S3: bytes go up as they are written; a failed block stores nothing; an upload
that fails stops the writer with its error. (On the real MinIO: tests/integration/test_stack.py.)"""

from __future__ import annotations

import hashlib
import threading

import pytest

from flts.storage import ObjectStore, StoredObject, WriteAborted


class PipeStore:
    """put_stream as boto3's upload reads a stream: a part at a time; ``fail_after`` parts, it fails."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.errors: list[BaseException] = []
        self.fail_after = fail_after
        self.parts_read = threading.Semaphore(0)

    def put_stream(self, uri: str, stream, max_bytes: int | None = None) -> StoredObject:
        parts = []
        try:
            while part := stream.read(64 * 1024):
                parts.append(part)
                self.parts_read.release()
                if self.fail_after is not None and len(parts) >= self.fail_after:
                    raise ConnectionError("S3 went away")
        except BaseException as exc:
            self.errors.append(exc)
            raise
        data = b"".join(parts)
        self.objects[uri] = data
        return StoredObject(uri, hashlib.sha256(data).hexdigest(), len(data))


def writer(store: PipeStore, uri: str):
    return ObjectStore.writer(store, uri)  # type: ignore[arg-type]


def test_what_is_written_is_uploaded_while_it_is_written_and_stored_when_the_block_ends():
    store, piece = PipeStore(), bytes(range(256)) * 1024
    with writer(store, "s3://b/k") as sink:
        for _ in range(8):
            sink.write(piece)
        assert store.parts_read.acquire(timeout=10)  # read before the block ended: nothing waits for the end
        assert sink.tell() == 8 * len(piece)
    assert store.objects["s3://b/k"] == piece * 8
    assert sink.stored == StoredObject("s3://b/k", hashlib.sha256(piece * 8).hexdigest(), 8 * len(piece))


def test_a_block_that_raises_stores_nothing():
    store = PipeStore()
    with pytest.raises(ValueError, match="scoring failed"), writer(store, "s3://b/k") as sink:
        sink.write(b"x" * 300_000)
        raise ValueError("scoring failed")
    assert store.objects == {}
    assert [type(error) for error in store.errors] == [WriteAborted]


def test_an_upload_that_fails_stops_the_writer_with_its_error():
    store = PipeStore(fail_after=2)
    with pytest.raises((OSError, ConnectionError), match="S3 went away"), writer(store, "s3://b/k") as sink:
        for _ in range(100):  # far more than the pipe holds: a write meets the closed pipe
            sink.write(b"y" * 64 * 1024)
    assert store.objects == {}
