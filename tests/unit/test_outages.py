"""Which failures are waited out (outages of S3, MLflow, Kafka) and which are dead-lettered (everything else)."""

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError
from mlflow.exceptions import MlflowException

from flts.data.io import DataError
from flts.outages import is_outage


def _mlflow_wrapping_a_refused_connection() -> MlflowException:
    try:
        try:
            raise requests.exceptions.ConnectionError("Max retries exceeded: Connection refused")
        except requests.exceptions.ConnectionError as exc:
            raise MlflowException(f"API request to http://mlflow:5000 failed with exception {exc}")  # noqa: B904
    except MlflowException as wrapped:
        return wrapped


def _s3_error(status: int) -> ClientError:
    return ClientError({"Error": {"Code": str(status)}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="http://minio:9000"),
        _s3_error(503),
        _mlflow_wrapping_a_refused_connection(),
        MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with error code 502 != 200"),
        TimeoutError("no delivery report from Kafka for topic model-training within 30s"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
    ids=["s3-unreachable", "s3-503", "mlflow-unreachable", "mlflow-502", "kafka-delivery-timeout", "reset"],
)
def test_backbone_outages_are_waited_out(error: BaseException) -> None:
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        DataError("column 'down', row 3: 'x' is not a number"),
        FloatingPointError("loss is NaN"),
        _s3_error(404),
        MlflowException("Run 'abc' not found"),
        ValueError("bad shape"),
    ],
    ids=["data", "model", "s3-404", "mlflow-404", "code"],
)
def test_data_model_and_code_errors_are_not_outages(error: BaseException) -> None:
    assert not is_outage(error)
