"""The local stack (the embedded default): real Kafka, MinIO and MLflow as plain processes, no Docker.

``flts stack up`` starts them under ``~/.local/state/flts/stack`` (cached installs under
``~/.cache/flts``); ``stack_environment`` gives the variables a service needs to use them.
"""

from flts.stack.config import StackConfig, common_settings, load_or_create_credentials, stack_environment
from flts.stack.manager import PartStatus, StackError, down, status, up, versions

__all__ = [
    "PartStatus",
    "StackConfig",
    "StackError",
    "common_settings",
    "down",
    "load_or_create_credentials",
    "stack_environment",
    "status",
    "up",
    "versions",
]
