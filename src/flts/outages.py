"""Which failures are outages of a backbone (S3, MLflow, Kafka) rather than faults of the data or the code.

An outage is waited out (retried with capped backoff for minutes, `HANDLER_OUTAGE_SECONDS`); anything else is
retried a few times and then dead-lettered. The exception and its causes are inspected, since the clients
wrap the network error (MLflow raises MlflowException from a requests ConnectionError, boto3 its own).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_NETWORK_ERRORS = {
    # requests / urllib3 (MLflow's client), by class name: neither is a subclass of the builtin ConnectionError.
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "MaxRetryError",
    "NewConnectionError",
    "ProtocolError",
    "RemoteDisconnected",
    # botocore (S3)
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


_MLFLOW_SERVER_ERROR = re.compile(r"failed with error code 5\d\d")


def _server_error(exc: BaseException) -> bool:
    """A 5xx from S3 (botocore ClientError's response) or from the MLflow server (its client's message)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500
    return type(exc).__name__ == "MlflowException" and bool(_MLFLOW_SERVER_ERROR.search(str(exc)))


def is_outage(exc: BaseException) -> bool:
    for cause in _chain(exc):
        if isinstance(cause, ConnectionError | TimeoutError) or type(cause).__name__ in _NETWORK_ERRORS:
            return True
        if _server_error(cause):
            return True
    return False
