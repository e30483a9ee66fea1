"""Who may call the HTTP APIs, and for which identifiers: API keys, stored only as their sha256.

A principal is a named key scoped to identifiers (exact names or shell-style patterns such as
``cell-*``); an admin principal may use every identifier, ``global`` included, ``force`` a retrain
and list across tenants. Keys are random 256-bit tokens (``flts keys create``), so a plain sha256
is enough to store them (no password stretching needed) and presented keys are compared in constant
time (hmac.compare_digest) against every stored hash.

Every router takes the caller with the ``Caller`` dependency; `install` puts the key ring on the app
and refuses a request with a body but no valid key before the body is read. ``AUTH_ENABLED=false``
(the local demo's default) makes every caller the anonymous admin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Annotated, Any

import yaml
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from flts.settings import AuthSettings
from flts.web import send_json

GLOBAL = "global"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
API_KEY_HEADER = "X-API-Key"

REFUSALS = Counter(
    "flts_auth_refusals_total", "API requests refused: no valid key (401), out of scope (403).", ["status"]
)

_bearer = HTTPBearer(auto_error=False, description="An FLTS API key as a bearer token.")
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="An FLTS API key.")


class Principal(BaseModel):
    """A key's owner and what it may touch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    identifiers: tuple[str, ...] = ()
    admin: bool = False

    def may_use(self, identifier: str) -> bool:
        """Admins: everything. Others: their identifiers' patterns, never ``global`` (the shared fallback)."""
        if self.admin:
            return True
        return identifier != GLOBAL and any(fnmatchcase(identifier, pattern) for pattern in self.identifiers)


ANONYMOUS_ADMIN = Principal(name="anonymous (auth disabled)", sha256="0" * 64, admin=True)


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principals: list[Principal] = []


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key: 32 random bytes, URL-safe."""
    return f"flts_{secrets.token_urlsafe(32)}"


class KeyRing:
    """The principals a service accepts; with auth disabled, everyone is the anonymous admin."""

    def __init__(self, principals: list[Principal], enabled: bool = True) -> None:
        if enabled and not principals:
            raise ValueError(
                "authentication is on (AUTH_ENABLED) but no key is configured: set AUTH_ADMIN_KEY or "
                "AUTH_KEYS_FILE (see the docs/security.md section), or AUTH_ENABLED=false for a local demo"
            )
        hashes = [principal.sha256 for principal in principals]
        if len(set(hashes)) != len(hashes):
            raise ValueError("two principals share one key (the same sha256): give each its own key")
        self.principals = principals
        self.enabled = enabled

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> KeyRing:
        principals: list[Principal] = []
        if settings.auth_keys_file is not None:
            principals = KeysFile.model_validate(yaml.safe_load(settings.auth_keys_file.read_text()) or {}).principals
        admin_key = settings.auth_admin_key.get_secret_value()
        if admin_key:
            principals.append(Principal(name="admin", sha256=key_hash(admin_key), admin=True))
        return cls(principals, enabled=settings.auth_enabled)

    def principal(self, key: str | None) -> Principal | None:
        """The key's principal; every stored hash is compared, each in constant time."""
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not key:
            return None
        presented = key_hash(key)
        found = None
        for principal in self.principals:
            if hmac.compare_digest(presented, principal.sha256):
                found = principal
        return found

    def principal_from_headers(self, headers: Any) -> Principal | None:
        """From ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (a Starlette Headers or a dict)."""
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else headers.get(API_KEY_HEADER.lower())
        return self.principal(key)


def _unauthenticated() -> HTTPException:
    REFUSALS.labels("401").inc()
    return HTTPException(
        401,
        f"a valid API key is required: send 'Authorization: Bearer <key>' or '{API_KEY_HEADER}: <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


def caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Principal:
    """The FastAPI dependency: the authenticated principal, or 401. (The parameters document the schemes.)"""
    return authenticate(request)


def authenticate(request: Request) -> Principal:
    """The request's principal, or 401; for routes outside FastAPI's dependency injection."""
    keyring: KeyRing = request.app.state.keyring
    principal = keyring.principal_from_headers(request.headers)
    if principal is None:
        raise _unauthenticated()
    return principal


Caller = Annotated[Principal, Depends(caller)]


def require_identifier(principal: Principal, identifier: str) -> None:
    """403 unless the principal may use the identifier (the message names only what was asked for)."""
    if not principal.may_use(identifier):
        scope = "an admin key" if identifier == GLOBAL else "a key scoped to it"
        REFUSALS.labels("403").inc()
        raise HTTPException(403, f"key {principal.name!r} may not use identifier {identifier!r}: it needs {scope}")


def require_admin(principal: Principal, action: str) -> None:
    if not principal.admin:
        REFUSALS.labels("403").inc()
        raise HTTPException(403, f"key {principal.name!r} may not {action}: it needs an admin key")


def install(app: FastAPI, settings: AuthSettings) -> KeyRing:
    """Put the key ring on the app (what `caller` reads) and refuse anonymous bodies before they are read."""
    keyring = KeyRing.from_settings(settings)
    app.state.keyring = keyring
    if keyring.enabled:
        app.add_middleware(_RefuseAnonymousBodies, keyring=keyring)
    return keyring


class _RefuseAnonymousBodies:
    """ASGI middleware: a POST/PUT/PATCH without a valid key is answered 401 before its body is read."""

    def __init__(self, app: Callable, keyring: KeyRing) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
            if self.keyring.principal_from_headers(headers) is None:
                refusal = _unauthenticated()
                await send_json(send, refusal.status_code, {"detail": refusal.detail}, refusal.headers)
                return
        await self.app(scope, receive, send)
