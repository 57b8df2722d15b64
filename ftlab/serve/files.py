"""Uploaded files: bytes under `FTLAB_HOME/files/<file-id>`, a row in the `files` table, and validation.

A file's name is only ever data: the bytes are stored under the id the server generates, so no client-given
name can reach the filesystem. Training files (purpose `fine-tune`) go through `ftlab data validate`'s checks at
upload (`validate_file(first_error=True)`): the first error refuses the file, named by line, message index and
field in the CLI's words; warnings never do. The number of examples is kept for job creation.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import BinaryIO

from openai.types import FileObject
from sqlalchemy import select
from sqlalchemy.orm import Session

from ftlab.config import home
from ftlab.data.validate import validate_file
from ftlab.records.tables import FileRecord, new_id, now
from ftlab.serve.errors import APIError, bad_request, not_found

# What openai-python's `FilePurpose` allows for upload; only `fine-tune` files are parsed here.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
RESULTS_PURPOSE = "fine-tune-results"
DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # OpenAI's limit for one file
CHUNK = 1 << 20
FILE_ID = re.compile(r"^file-[A-Za-z0-9]{1,64}$")


def files_dir() -> Path:
    """`$FTLAB_FILES_DIR`, default `FTLAB_HOME/files`."""
    override = os.environ.get("FTLAB_FILES_DIR")
    path = Path(override).expanduser() if override else home() / "files"
    path.mkdir(parents=True, exist_ok=True)
    return path


def stored_path(record: FileRecord) -> Path:
    return files_dir() / record.id


def clean_filename(name: str | None) -> str:
    """The last component of a client-given name, without control characters, at most 255 characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return (name or "upload")[:255]


def to_openai(record: FileRecord) -> FileObject:
    return FileObject(
        id=record.id,
        bytes=record.bytes,
        created_at=record.created_at,
        filename=record.filename,
        object="file",
        purpose=record.purpose,
        status=record.status,
        status_details=record.status_details,
        expires_at=record.expires_at,
    )


def save_upload(
    db: Session, stream: BinaryIO, *, filename: str | None, purpose: str, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
) -> FileRecord:
    """Store a client's upload (refusing it past `max_bytes` or, for `fine-tune`, if any line is not a valid
    example)."""
    if purpose not in UPLOAD_PURPOSES:
        raise bad_request(
            f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'", param="purpose", code="invalid_value"
        )
    return _store(db, stream, filename=filename, purpose=purpose, max_bytes=max_bytes)


def _store(db: Session, stream: BinaryIO, *, filename: str | None, purpose: str, max_bytes: int) -> FileRecord:
    name = clean_filename(filename)
    folder = files_dir()
    handle, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=folder)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(handle, "wb") as out:
            while block := stream.read(CHUNK):
                size += len(block)
                if size > max_bytes:
                    raise APIError(
                        413,
                        f"File '{name}' is larger than this server's upload limit of {max_bytes} bytes.",
                        param="file",
                        code="file_too_large",
                    )
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise bad_request(f"File '{name}' is empty.", param="file", code="empty_file")
        n_examples = None
        if purpose == "fine-tune":
            if not name.lower().endswith(".jsonl"):
                raise bad_request(
                    f"Invalid file format for Fine-Tuning API. Must be .jsonl (got '{name}').",
                    param="file",
                    code="invalid_file_format",
                )
            report = validate_file(tmp, None, first_error=True)
            if not report.ok:
                error = report.findings[0]
                where = ", ".join(part for part in (name, error.location()) if part)
                raise bad_request(f"Invalid training file: {where}: {error.message} (fix: {error.fix})",
                                  param="file", code="invalid_file_format")  # fmt: skip
            n_examples = report.n_examples
        record = FileRecord(
            id=new_id("file-"),
            filename=name,
            purpose=purpose,
            bytes=size,
            sha256=digest.hexdigest(),
            created_at=now(),
            status="processed",
            n_examples=n_examples,
        )
        tmp.rename(folder / record.id)  # bytes first, row second: a crash between leaves no row without bytes
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    db.add(record)
    db.flush()
    return record


def register_result_file(db: Session, source: Path, *, filename: str) -> FileRecord:
    """Copy a file the server produced (a job's metrics CSV) into the file store, purpose `fine-tune-results`."""
    with open(source, "rb") as stream:
        return _store(db, stream, filename=filename, purpose=RESULTS_PURPOSE, max_bytes=1 << 62)


def get_file(db: Session, file_id: str, param: str | None = None) -> FileRecord:
    record = db.scalar(select(FileRecord).where(FileRecord.id == file_id)) if FILE_ID.match(file_id) else None
    if record is None:
        raise not_found("File", file_id, param=param)
    return record


def list_files(
    db: Session, *, after: str | None, limit: int, order: str, purpose: str | None
) -> tuple[list[FileRecord], bool]:
    query = select(FileRecord)
    if purpose:
        query = query.where(FileRecord.purpose == purpose)
    descending = order == "desc"
    if after:
        anchor = get_file(db, after, param="after")
        query = query.where(FileRecord.pk < anchor.pk if descending else FileRecord.pk > anchor.pk)
    query = query.order_by(FileRecord.pk.desc() if descending else FileRecord.pk).limit(limit + 1)
    rows = list(db.scalars(query))
    return rows[:limit], len(rows) > limit


def delete_file(db: Session, file_id: str) -> None:
    """Forget a file: the row goes first (committed), then the bytes."""
    record = get_file(db, file_id)
    path = stored_path(record)
    db.delete(record)
    db.commit()
    path.unlink(missing_ok=True)
