"""Least privilege in object storage: one MinIO user per service, its policy naming only what it needs.

The root key creates the buckets and these users (`flts init` in compose and the chart, `up` on the local
stack); no service holds it. A service's access key is ``flts-<service>``; its secret comes from the
deployment (a Secret, `.env`, or derived from the local stack's root secret). Inference and the trainers
reach model artifacts through the MLflow server (`mlflow-artifacts:`), so only the MLflow server holds a
key to the `mlflow` bucket.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flts.settings import CommonSettings

READ = ("s3:GetObject",)
WRITE = ("s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")
DELETE = ("s3:DeleteObject",)
# On every bucket a service touches: head_bucket (readiness) and listings work, and a missing object answers
# 404 rather than 403. It reveals key names of that bucket only.
BUCKET_ACTIONS = ("s3:ListBucket", "s3:GetBucketLocation")

# service -> (bucket setting, key pattern, actions): every S3 call of the service's code, and nothing more.
SERVICE_GRANTS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    # Stores uploads (deleting one over the size limit) and serves them; reads the status page's lineages and
    # serves a tenant its scored claims (`GET /score/{claim_id}`).
    "gateway": [
        ("bucket_datasets", "*", READ + WRITE + DELETE),
        ("bucket_processed", "*", READ),
        ("bucket_promotion", "*", READ),
        ("bucket_inference_logs", "*", READ),
    ],
    # Reads an upload, writes its lineage (and reads an existing lineage's claim).
    "preprocess": [("bucket_datasets", "*", READ), ("bucket_processed", "*", READ + WRITE)],
    "train": [("bucket_processed", "*", READ)],
    "nonml": [("bucket_processed", "*", READ)],
    # Writes decisions, history and the promotion pointers.
    "eval": [("bucket_promotion", "*", READ + WRITE)],
    # Reads rows sent for scoring (not training uploads), lineages and decisions; writes scored results.
    "inference": [
        ("bucket_datasets", "*/scoring/*", READ),
        ("bucket_processed", "*", READ),
        ("bucket_promotion", "*", READ),
        ("bucket_inference_logs", "*", READ + WRITE),
    ],
    # The MLflow server proxies every artifact (the model bundles) to its bucket.
    "mlflow": [("bucket_mlflow", "*", READ + WRITE + DELETE)],
}
SERVICES = tuple(SERVICE_GRANTS)


def access_key(service: str) -> str:
    """A service's access key id (not a secret: the secret is)."""
    return f"flts-{service}"


def policy_name(service: str) -> str:
    return f"flts-{service}"


def service_policy(settings: CommonSettings, service: str) -> dict:
    """The IAM policy document of one service, with the bucket names of ``settings``."""
    grants = SERVICE_GRANTS[service]
    buckets = sorted({getattr(settings, field) for field, _, _ in grants})
    statements = [
        {"Effect": "Allow", "Action": list(BUCKET_ACTIONS), "Resource": [f"arn:aws:s3:::{b}" for b in buckets]}
    ]
    for field, pattern, actions in grants:
        resource = f"arn:aws:s3:::{getattr(settings, field)}/{pattern}"
        statements.append({"Effect": "Allow", "Action": list(actions), "Resource": [resource]})
    return {"Version": "2012-10-17", "Statement": statements}


def ensure_service_users(settings: CommonSettings, secrets: dict[str, str]) -> list[str]:
    """Create or update each service's user (with ``secrets[service]``) and its policy; idempotent.

    ``settings`` hold the root key. Returns the access keys made, in ``SERVICES`` order.
    """
    unknown = sorted(set(secrets) - set(SERVICES))
    if unknown:
        raise ValueError(f"no S3 policy for service(s) {unknown}; known: {list(SERVICES)}")
    if not secrets:
        return []  # external S3: no users to make here (its own IAM scopes the key the services are given)
    from minio import MinioAdmin
    from minio.credentials import StaticProvider

    endpoint = urlsplit(settings.s3_endpoint_url)
    admin = MinioAdmin(
        endpoint=endpoint.netloc,
        credentials=StaticProvider(settings.aws_access_key_id, settings.aws_secret_access_key.get_secret_value()),
        region=settings.aws_region,
        secure=endpoint.scheme == "https",
    )
    made = []
    for service in SERVICES:
        if service not in secrets:
            continue
        admin.policy_add(policy_name(service), policy=service_policy(settings, service))
        admin.user_add(access_key(service), secrets[service])
        admin.policy_set(policy_name(service), user=access_key(service))  # replaces: idempotent
        made.append(access_key(service))
    return made
