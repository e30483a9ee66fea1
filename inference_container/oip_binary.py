"""The binary tensor data extension of the Open Inference Protocol, as Triton defines it and tritonclient uses it
by default, in both directions.

A body in this form is the JSON request (its length in bytes in the `Inference-Header-Content-Length` header)
followed by the raw data of each input that says `parameters.binary_data_size`, in the order of the inputs.
Numbers are little-endian; a BYTES element is a 4-byte little-endian length, then that many bytes. An answer
holding binary outputs is framed the same way (each output then says its `binary_data_size` and has no `data`).

Only framing lives here: what cannot be read as framed is a `Malformed` (answered 400); whether the tensors fit
the model is oip.py's business (422).
"""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"

# The protocol's numeric datatypes as little-endian numpy types; BOOL and BF16 are left out: no column holds them.
NUMERIC: dict[str, np.dtype] = {
    name: np.dtype(code)
    for name, code in (
        ("FP16", "<f2"),
        ("FP32", "<f4"),
        ("FP64", "<f8"),
        ("INT8", "i1"),
        ("INT16", "<i2"),
        ("INT32", "<i4"),
        ("INT64", "<i8"),
        ("UINT8", "u1"),
        ("UINT16", "<u2"),
        ("UINT32", "<u4"),
        ("UINT64", "<u8"),
    )
}
_LENGTH = struct.Struct("<I")


class Malformed(ValueError):
    """A body that cannot be read as the protocol frames it."""


def split(body: bytes, header_length: str | None) -> tuple[bytes, Blobs]:
    """The JSON request and the binary data after it (none without the header)."""
    if header_length is None:
        return body, Blobs(b"")
    if not re.fullmatch(r"[0-9]{1,15}", header_length.strip()):
        raise Malformed(f"{HEADER_LENGTH} must be a whole number of bytes, got {header_length!r}")
    length = int(header_length)
    if length > len(body):
        raise Malformed(f"{HEADER_LENGTH} is {length} but the body holds {len(body)} bytes")
    return body[:length], Blobs(body[length:])


class Blobs:
    """The binary data after the JSON request, handed out to the binary inputs in their order."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def take(self, name: str, size: Any) -> bytes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise Malformed(f"input {name!r}: binary_data_size must be a whole number of bytes, got {size!r}")
        left = len(self.data) - self.offset
        if size > left:
            raise Malformed(f"input {name!r}: binary_data_size {size} runs past the body ({left} bytes are left)")
        self.offset += size
        return bytes(self.data[self.offset - size : self.offset])

    def check_used(self) -> None:
        """Bytes no input claimed mean the sizes and the body disagree."""
        left = len(self.data) - self.offset
        if left:
            raise Malformed(f"{left} bytes after the last binary input's data (binary_data_size too small?)")


def decode(name: str, datatype: str, raw: bytes) -> list[Any]:
    """A binary input's elements as Python values: numbers, or str for BYTES (which must hold UTF-8 text here)."""
    if datatype == "BYTES":
        return [_text(name, position, element) for position, element in enumerate(_elements(name, raw))]
    dtype = NUMERIC[datatype]
    if len(raw) % dtype.itemsize:
        raise Malformed(f"input {name!r}: {len(raw)} bytes are not whole {datatype} elements ({dtype.itemsize} bytes)")
    return np.frombuffer(raw, dtype).tolist()


def _elements(name: str, raw: bytes) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise Malformed(f"input {name!r}: BYTES element {len(elements) + 1} has a cut-off length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise Malformed(f"input {name!r}: BYTES element {len(elements) + 1} says {length} bytes; fewer are left")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _text(name: str, position: int, element: bytes) -> str:
    try:
        return element.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(f"input {name!r}: BYTES element {position + 1} is not UTF-8 text") from None


def encode(datatype: str, values: list[str] | np.ndarray) -> bytes:
    """An output's elements as binary data (the inverse of `decode`)."""
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(raw)) + raw for raw in (str(value).encode() for value in values))
    return np.asarray(values, NUMERIC[datatype]).tobytes()
