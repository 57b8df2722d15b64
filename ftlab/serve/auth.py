"""API keys: `ftl-…` secrets shown once at creation; the database keeps only their sha256."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from ftlab.records.tables import ApiKey, new_id, now
from ftlab.serve.errors import APIError

KEY_PREFIX = "ftl-"
LAST_USED_RESOLUTION_S = 60  # how stale `last_used_at` may get before a request rewrites it


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(db: Session, name: str = "") -> tuple[ApiKey, str]:
    """A new key record and its secret (the only time the secret is available)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key-", 16), name=name, prefix=secret[:10], sha256=_digest(secret))
    db.add(key)
    db.flush()
    return key, secret


def list_keys(db: Session) -> list[ApiKey]:
    return list(db.scalars(select(ApiKey).order_by(ApiKey.pk)))


def revoke_key(db: Session, key_id: str) -> ApiKey | None:
    key = db.scalar(select(ApiKey).where(ApiKey.id == key_id))
    if key is not None and key.revoked_at is None:
        key.revoked_at = now()
    return key


def active_key_count(db: Session) -> int:
    return len([k for k in list_keys(db) if k.revoked_at is None])


def check_authorization(db: Session, header: str | None) -> None:
    """Accept `Authorization: Bearer <key>` for an active key; otherwise a 401 in OpenAI's words."""
    if not header or not header.lower().startswith("bearer ") or not header[7:].strip():
        raise APIError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using "
            "Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with `ftlab keys create`.",
            code="missing_api_key",
        )
    secret = header[7:].strip()
    key = db.scalar(select(ApiKey).where(ApiKey.sha256 == _digest(secret)))
    if key is None or key.revoked_at is not None:
        shown = secret[:6] + "*" * 4 + secret[-4:] if len(secret) > 12 else "*" * len(secret)
        raise APIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
    if key.last_used_at is None or now() - key.last_used_at > LAST_USED_RESOLUTION_S:
        key.last_used_at = now()
