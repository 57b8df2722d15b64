"""Who is asking: API keys (`ftl-…` secrets shown once at creation; the database keeps only their sha256), the
project a request acts in, and the database session it reads or writes through.

A key belongs to one project and sees that project's files, jobs, checkpoints and models only; an admin key
sees every project. Without required keys every request acts as an admin of the project `default`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Depends, Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ftlab.records.db import request_session, session_scope
from ftlab.records.tables import DEFAULT_PROJECT, ApiKey, new_id, now
from ftlab.serve.errors import APIError

KEY_PREFIX = "ftl-"
LAST_USED_RESOLUTION_S = 60  # how stale `last_used_at` may get before a request rewrites it
PROJECT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
READ_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Caller:
    """The project a request acts in, and whether it may see every project."""

    project: str = DEFAULT_PROJECT
    admin: bool = False

    def sees(self, project: str) -> bool:
        return self.admin or project == self.project


SERVER = Caller(DEFAULT_PROJECT, admin=True)  # the server itself, and every request when no key is required


def request_db(request: Request) -> Iterator[Session]:
    """The request's session: read-only for GET and HEAD, so reading never queues behind a writer."""
    yield from request_session(read_only=request.method in READ_METHODS)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    db: Session, name: str = "", *, project: str = DEFAULT_PROJECT, admin: bool = False
) -> tuple[ApiKey, str]:
    """A new key record and its secret (the only time the secret is available)."""
    if not PROJECT_NAME.match(project):
        raise ValueError(f"project '{project}': use 1 to 64 letters, digits, '.', '_' or '-'")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key-", 16), name=name, prefix=secret[:10], sha256=_digest(secret), project=project,
                 admin=admin)  # fmt: skip
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


def check_authorization(db: Session, header: str | None) -> ApiKey:
    """The active key of `Authorization: Bearer <key>`; otherwise a 401 in OpenAI's words. Only reads `db`."""
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
    return key


def note_use(key: ApiKey) -> None:
    """Update the key's `last_used_at` (at most once a minute) in a short transaction of its own. Call it after
    ending the transaction that read the key: on SQLite a writing request's read holds the write lock."""
    if key.last_used_at is None or now() - key.last_used_at > LAST_USED_RESOLUTION_S:
        with session_scope() as db:
            db.execute(update(ApiKey).where(ApiKey.pk == key.pk).values(last_used_at=now()))


def current_caller(request: Request, db: Session = Depends(request_db)) -> Caller:
    """The caller of a request (a FastAPI dependency): its key's project, or an admin of `default` when the
    server requires no keys."""
    if not request.app.state.settings.require_key:
        return SERVER
    key = check_authorization(db, request.headers.get("authorization"))
    caller = Caller(key.project, key.admin)
    db.commit()  # end the key's read: a long route (an upload being validated) holds no transaction open
    note_use(key)
    return caller
