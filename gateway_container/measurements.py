"""`POST /measurements` as it streams in: rows counted (JSON: parsed) a chunk at a time, and a budget of rows
per caller.

A reader is fed the body's chunks as they arrive and refuses the request (413) at the first row past its cap, so a
body never costs more than the route's body limit (`MEASUREMENTS_MAX_BYTES`, `flts.web.BodySizeLimit`) and the
cap's rows. What it read then becomes CSV bytes that `Gateway.measurements_of` checks as an upload is checked.
`RowBuckets` is the per-principal token bucket of rows behind the route's 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import ijson
import pandas as pd
from fastapi import HTTPException

JSON_SHAPE = '{"identifier": "...", "rows": [{"time": "...", "<column>": <number or null>, ...}]}'


class MeasurementReader(Protocol):
    rows: int

    def feed(self, chunk: bytes) -> None:
        """Take the next chunk of the body; 413 at the first row past the cap, 422 where the body is malformed."""

    def finish(self) -> tuple[bytes, str | None]:
        """The rows as CSV bytes and the identifier the body names (JSON only); 422 if the body is incomplete."""


def too_many_rows(cap: int) -> HTTPException:
    """The answer to the first row past the cap: reading stops there, nothing is published."""
    return HTTPException(
        413,
        f"more than {cap} rows in one request (MEASUREMENTS_MAX_ROWS): send at most {cap} rows a request, "
        "or a file of rows to POST /score or POST /datasets",
        headers={"Connection": "close"},  # the rest of the body is never read
    )


class CsvRows:
    """A CSV body kept as it came, its records counted as they arrive: a newline ends one unless it is inside
    quotes; blank lines are not rows (pandas skips them); the first record is the header."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self._chunks: list[bytes] = []
        self._records = 0
        self._quoted = False  # inside a quoted field where the last chunk ended
        self._started = False  # the current record holds something

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        lines = chunk.split(b"\n")
        for index, line in enumerate(lines):
            self._quoted ^= line.count(b'"') % 2 == 1
            self._started = self._started or line not in (b"", b"\r")
            if index < len(lines) - 1 and not self._quoted:
                self._end_record()

    def _end_record(self) -> None:
        if self._started:
            self._records += 1
            self.rows = max(0, self._records - 1)
            if self.rows > self.max_rows:
                raise too_many_rows(self.max_rows)
        self._started = False

    def finish(self) -> tuple[bytes, str | None]:
        self._end_record()  # a last row without a newline
        return b"".join(self._chunks), None


class JsonRows:
    """A JSON body (`JSON_SHAPE`) parsed as it arrives (ijson's event parser): each row a dict, the cap checked at
    the end of every row."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self.identifier: str | None = None
        self._kept: list[dict[str, Any]] = []
        self._events = ijson.sendable_list()
        self._parser = ijson.basic_parse_coro(self._events, use_float=True)
        self._state = "start"  # start, top, identifier, rows, row, cell, done
        self._key = ""
        self._row: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return  # to ijson an empty chunk is the end of the body (`finish`)
        try:
            self._parser.send(chunk)
        except ijson.JSONError as exc:
            self._handle_events()  # a shape error before the syntax error is the clearer answer
            raise _malformed(exc) from exc
        self._handle_events()

    def finish(self) -> tuple[bytes, str | None]:
        try:
            self._parser.close()
        except ijson.JSONError as exc:
            raise _malformed(exc) from exc
        self._handle_events()
        if not self._kept:
            raise HTTPException(422, f"rows: at least 1 row is needed; send {JSON_SHAPE}")
        return pd.DataFrame(self._kept).to_csv(index=False).encode(), self.identifier

    def _handle_events(self) -> None:
        for event, value in self._events:
            self._handle(event, value)
        del self._events[:]

    def _handle(self, event: str, value: Any) -> None:
        state = self._state
        if state == "start" and event == "start_map":
            self._state = "top"
        elif state == "top" and event == "map_key":
            if value not in ("identifier", "rows"):
                raise HTTPException(422, f"{value}: extra inputs are not permitted; send {JSON_SHAPE}")
            self._state = value
        elif state == "top" and event == "end_map":
            self._state = "done"
        elif state == "identifier" and event in ("string", "null"):
            self.identifier, self._state = value, "top"
        elif state == "identifier":
            raise HTTPException(422, "identifier: must be a string")
        elif state == "rows" and event == "start_array":
            self._state = "row"
        elif state == "row" and event == "start_map":
            self._row, self._state = {}, "cell"
        elif state == "row" and event == "end_array":
            self._state = "top"
        elif state == "row":
            raise HTTPException(422, f"row {self.rows + 1}: a row is an object {{column: value}}, not {event}")
        elif state == "cell" and event == "map_key":
            self._key, self._state = value, "value"
        elif state == "cell" and event == "end_map":
            self._end_row()
        elif state == "value" and event in ("string", "number", "null"):
            self._row[self._key], self._state = value, "cell"
        elif state == "value":
            raise HTTPException(
                422, f"row {self.rows + 1}, column {self._key!r}: a cell is a string, a number or null, not {event}"
            )
        else:
            raise HTTPException(422, f"{self._where()}: unexpected {event}; send {JSON_SHAPE}")

    def _end_row(self) -> None:
        self.rows += 1
        if self.rows > self.max_rows:
            raise too_many_rows(self.max_rows)
        self._kept.append(self._row)
        self._state = "row"

    def _where(self) -> str:
        return "rows" if self._state == "rows" else "body"


def _malformed(exc: Exception) -> HTTPException:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return HTTPException(422, f"body: not valid JSON ({reason}); send {JSON_SHAPE}")


class RowBuckets:
    """A token bucket of rows per principal: each holds up to ``burst`` rows and refills at ``rate`` a second.

    Only the principals that called are held (as many as there are keys). One process's buckets: with several
    gateway replicas a principal's rate is per replica.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # principal -> (rows in the bucket, when)
        self._lock = threading.Lock()

    def take(self, who: str, rows: int, *, check_only: bool = False) -> float:
        """Take ``rows`` from ``who``'s bucket: 0.0 once taken, else the seconds until the bucket would hold them
        (nothing taken). ``check_only``: only whether it holds them now."""
        with self._lock:
            now = self.clock()
            held, then = self._buckets.get(who, (float(self.burst), now))
            held = min(float(self.burst), held + (now - then) * self.rate)
            if held >= rows:
                self._buckets[who] = (held if check_only else held - rows, now)
                return 0.0
            self._buckets[who] = (held, now)
            return (rows - held) / self.rate


def retry_after(seconds: float) -> str:
    """A Retry-After header's whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
