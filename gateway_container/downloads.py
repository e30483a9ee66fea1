"""What the gateway lets a caller download, key-scoped: the one function behind `GET /objects/...` and
`GET /download/...`.

A caller may read what belongs to an identifier it may use (flts.auth), and only this:

- its uploads: bucket `datasets`, keys `<identifier>/...` (layout.upload_key, layout.scoring_upload_key);
- its lineages' processed splits: bucket `processed-data`, keys `<identifier>/<config_hash>/<split>.parquet`
  with split `train`, `validation` or `test` (layout.split_file); the metadata, scaler and claim beside them
  are the pipeline's;
- the earlier system's flat names in `processed-data` (`test_processed_data.parquet`, ...: `EARLIER_SPLITS`):
  that split of the identifier's newest preprocessed lineage (the first of `GET /lineages`), the identifier
  being the query's `identifier`, `global` when none is given.

Model weights (the `mlflow` bucket), promotion pointers and decisions, scored results and every other bucket
are never served (404). A key that escapes its bucket or does not have the bucket's shape is a 400; one that
names nothing is a 404; 401 and 403 come from flts.auth as on every route.
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import StreamingResponse

from flts.auth import GLOBAL, Principal, require_identifier
from flts.layout import processed_uri, split_file
from gateway_container.gateway import CONFIG_HASH, IDENTIFIER, Gateway, checked_identifier

SPLITS = ("train", "validation", "test")
SPLIT_FILES = {split_file(split): split for split in SPLITS}
# The earlier system kept one processed file per split at the top of its processed-data bucket; its training
# file was `processed_data.parquet`.
EARLIER_SPLITS = {
    "processed_data.parquet": "train",
    "train_processed_data.parquet": "train",
    "val_processed_data.parquet": "validation",
    "test_processed_data.parquet": "test",
}


def checked_key(key: str) -> list[str]:
    """The key's parts; 400 for a key that could leave its bucket (empty parts, `.`, `..`, backslashes)."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise HTTPException(400, f"invalid object key {key!r}")
    return parts


def served_uri(gw: Gateway, principal: Principal, bucket: str, key: str, identifier: str | None = None) -> str:
    """The object a caller asked for, once it may read it: 404 for a bucket not served, 400 for a malformed
    key, 403 out of scope. ``identifier`` names whose newest lineage an earlier flat name reads."""
    settings = gw.settings
    if bucket not in (settings.bucket_datasets, settings.bucket_processed):
        # Model weights, promotion pointers and scored results are the pipeline's, not a download.
        raise HTTPException(
            404,
            f"only uploads ({settings.bucket_datasets!r}) and processed splits ({settings.bucket_processed!r})"
            " are served",
        )
    parts = checked_key(key)
    if bucket == settings.bucket_datasets:
        require_identifier(principal, parts[0])  # uploads are stored under <identifier>/ (layout.upload_key)
        return f"s3://{bucket}/{key}"
    if len(parts) == 1:
        if key not in EARLIER_SPLITS:
            raise HTTPException(
                400,
                f"{key!r} is not a processed split: ask for <identifier>/<config_hash>/<split>.parquet "
                f"or one of {sorted(EARLIER_SPLITS)}",
            )
        identifier = identifier or GLOBAL
        require_identifier(principal, identifier)
        lineages = gw.lineages(checked_identifier(identifier))
        if not lineages:
            raise HTTPException(404, f"identifier {identifier!r} has no processed lineage (yet)")
        return processed_uri(settings, identifier, lineages[0].config_hash, split_file(EARLIER_SPLITS[key]))
    if len(parts) != 3 or not IDENTIFIER.match(parts[0]) or not CONFIG_HASH.match(parts[1]):
        raise HTTPException(400, f"{key!r} is not a processed split's key: <identifier>/<config_hash>/<split>.parquet")
    require_identifier(principal, parts[0])
    if parts[2] not in SPLIT_FILES:
        raise HTTPException(404, f"only the splits {sorted(SPLIT_FILES)} of a lineage are served")
    return f"s3://{bucket}/{key}"


def download(
    gw: Gateway, principal: Principal, bucket: str, key: str, identifier: str | None = None
) -> StreamingResponse:
    """What both download routes answer: the object ``served_uri`` allows, as an attachment under the name it was
    asked for, read from the store in chunks; 404 when it is not there."""
    uri = served_uri(gw, principal, bucket, key, identifier)
    if not gw.store.exists(uri):
        raise HTTPException(404, f"no object {uri}")
    filename = key.rsplit("/", 1)[-1].replace('"', "")
    return StreamingResponse(
        gw.store.iter_chunks(uri),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
