"""API keys for the tests that turn auth on: a keys file of tenants (hashes only) and the admin's key."""

from __future__ import annotations

from pathlib import Path

import yaml

from flts.auth import key_hash


def auth_fields(directory: Path, admin_key: str, tenants: dict[str, tuple[str, list[str]]]) -> dict[str, object]:
    """AuthSettings fields with auth on: the admin's key, and a keys file in ``directory`` of each tenant's name ->
    (its key, the identifiers or patterns it may use)."""
    keys = directory / "api-keys.yaml"
    principals = [
        {"name": name, "sha256": key_hash(key), "identifiers": identifiers}
        for name, (key, identifiers) in tenants.items()
    ]
    keys.write_text(yaml.safe_dump({"principals": principals}))
    return {"auth_enabled": True, "auth_keys_file": keys, "auth_admin_key": admin_key}
