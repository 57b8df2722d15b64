"""Uploaded files: bytes under `FTLAB_HOME/files/<file-id>`, a row in the `files` table, and validation.

A file's name is only ever data: the bytes are stored under the id the server generates, so no client-given
name can reach the filesystem. Training files (purpose `fine-tune`) go through `ftlab data validate`'s checks at
upload (`validate_file(first_error=True)`): the first error refuses the file, named by line, message index and
field in the CLI's words; warnings never do. The number of examples is kept for job creation.

An upload is written to a `.upload-*` file that its process holds an exclusive `flock` on until the bytes are
renamed to their id; a process killed meanwhile releases the lock, so `remove_leftovers()` at start deletes
exactly the temp files nobody is writing (another server sharing the folder keeps its own). A file belongs to
the project of the key that uploaded it; other projects' keys get a 404 for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, BinaryIO, get_args

from openai.types import FilePurpose
from sqlalchemy import select
from sqlalchemy.orm import Session

from ftlab.config import home
from ftlab.data.validate import validate_file
from ftlab.records.tables import DEFAULT_PROJECT, FileRecord, Job, new_id, now
from ftlab.serve.auth import Caller
from ftlab.serve.errors import APIError, bad_request, not_found

# What openai-python's `FilePurpose` allows for upload (assistants, batch, fine-tune, vision, user_data, evals);
# only `fine-tune` files are parsed here.
UPLOAD_PURPOSES = get_args(FilePurpose)
RESULTS_PURPOSE = "fine-tune-results"
UNFINISHED = ("validating_files", "queued", "running")  # a job in these states still reads its files
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


def to_openai(record: FileRecord) -> dict[str, Any]:
    """The file in OpenAI's shape (`openai.types.FileObject`). Built as plain data, not validated against the
    client's model: a purpose the API accepts but `FileObject` does not list (`evals`) must never turn a file
    that is already stored into a 500. `expires_at` and `status_details` appear when they have a value."""
    optional = {"expires_at": record.expires_at, "status_details": record.status_details}
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": record.created_at,
        "filename": record.filename,
        "purpose": record.purpose,
        "status": record.status,
        **{key: value for key, value in optional.items() if value is not None},
    }


def save_upload(
    db: Session,
    stream: BinaryIO,
    *,
    filename: str | None,
    purpose: str,
    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    project: str = DEFAULT_PROJECT,
) -> FileRecord:
    """Store a client's upload (refusing it past `max_bytes` or, for `fine-tune`, if any line is not a valid
    example). The bytes are read and checked before `db` is touched: no transaction is open meanwhile."""
    if purpose not in UPLOAD_PURPOSES:
        raise bad_request(
            f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'", param="purpose", code="invalid_value"
        )
    return _store(db, stream, filename=filename, purpose=purpose, max_bytes=max_bytes, project=project)


def _store(
    db: Session, stream: BinaryIO, *, filename: str | None, purpose: str, max_bytes: int, project: str
) -> FileRecord:
    name = clean_filename(filename)
    folder = files_dir()
    handle, tmp_name = tempfile.mkstemp(prefix=".upload-", dir=folder)
    tmp = Path(tmp_name)
    lock = os.dup(handle)  # the flock lives while this descriptor is open: through writing, checking and renaming
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        size, sha256 = _write(handle, stream, name, max_bytes)
        if size == 0:
            raise bad_request(f"File '{name}' is empty.", param="file", code="empty_file")
        n_examples = _count_examples(tmp, name) if purpose == "fine-tune" else None
        record = FileRecord(id=new_id("file-"), filename=name, purpose=purpose, bytes=size, sha256=sha256,
                            created_at=now(), status="processed", n_examples=n_examples, project=project)  # fmt: skip
        tmp.rename(folder / record.id)  # bytes first, row second: a crash between leaves no row without bytes
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(lock)
    db.add(record)
    db.flush()
    return record


def _write(handle: int, stream: BinaryIO, name: str, max_bytes: int) -> tuple[int, str]:
    """Copy `stream` into the open temp file `handle` (closing it), refusing more than `max_bytes`; (size, sha256)."""
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(handle, "wb") as out:
        while block := stream.read(CHUNK):
            size += len(block)
            if size > max_bytes:
                raise APIError(413, f"File '{name}' is larger than this server's upload limit of {max_bytes} "
                               "bytes.", param="file", code="file_too_large")  # fmt: skip
            digest.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _count_examples(path: Path, name: str) -> int:
    """The examples of a training file, refusing it at its first error (named by line, message and field)."""
    if not name.lower().endswith(".jsonl"):
        raise bad_request(f"Invalid file format for Fine-Tuning API. Must be .jsonl (got '{name}').", param="file",
                          code="invalid_file_format")  # fmt: skip
    report = validate_file(path, None, first_error=True)
    if not report.ok:
        error = report.findings[0]
        where = ", ".join(part for part in (name, error.location()) if part)
        raise bad_request(f"Invalid training file: {where}: {error.message} (fix: {error.fix})", param="file",
                          code="invalid_file_format")  # fmt: skip
    return report.n_examples


def remove_leftovers(folder: Path | None = None) -> list[Path]:
    """Delete the `.upload-*` temp files no live process holds (an upload cut by kill -9); returns them."""
    removed = []
    for path in (folder or files_dir()).glob(".upload-*"):
        try:
            handle = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # finished or cleaned up by its owner meanwhile
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # its upload is still being written or checked
            continue
        finally:
            os.close(handle)
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def register_result_file(db: Session, source: Path, *, filename: str, project: str) -> FileRecord:
    """Copy a file the server produced (a job's metrics CSV) into the file store, purpose `fine-tune-results`."""
    with open(source, "rb") as stream:
        return _store(db, stream, filename=filename, purpose=RESULTS_PURPOSE, max_bytes=1 << 62, project=project)


def get_file(
    db: Session, file_id: str, caller: Caller | None = None, *, param: str | None = None, lock: bool = False
) -> FileRecord:
    """The file with this id, if `caller` (None: the server itself) may see it; otherwise a 404. `lock`: hold
    its row until the transaction ends (PostgreSQL; SQLite's write transactions are serial anyway), so a job
    created on a file and the file's deletion cannot both succeed."""
    query = select(FileRecord).where(FileRecord.id == file_id)
    record = db.scalar(query.with_for_update() if lock else query) if FILE_ID.match(file_id) else None
    if record is None or (caller is not None and not caller.sees(record.project)):
        raise not_found("File", file_id, param=param)
    return record


def list_files(
    db: Session, caller: Caller, *, after: str | None, limit: int, order: str, purpose: str | None
) -> tuple[list[FileRecord], bool]:
    query = select(FileRecord)
    if not caller.admin:
        query = query.where(FileRecord.project == caller.project)
    if purpose:
        query = query.where(FileRecord.purpose == purpose)
    descending = order == "desc"
    if after:
        anchor = get_file(db, after, caller, param="after")
        query = query.where(FileRecord.pk < anchor.pk if descending else FileRecord.pk > anchor.pk)
    query = query.order_by(FileRecord.pk.desc() if descending else FileRecord.pk).limit(limit + 1)
    rows = list(db.scalars(query))
    return rows[:limit], len(rows) > limit


def delete_file(db: Session, file_id: str, caller: Caller) -> None:
    """Forget a file: the row goes first (committed), then the bytes. A file an unfinished job will read is
    refused with a 409: deleting it would fail that job."""
    record = get_file(db, file_id, caller, lock=True)
    users = db.scalars(
        select(Job.id).where(
            Job.status.in_(UNFINISHED), (Job.training_file == file_id) | (Job.validation_file == file_id)
        )
    ).all()
    if users:
        raise APIError(409, f"File {file_id} is used by fine-tuning job {', '.join(users)}, which has not finished; "
                       "cancel it or wait for it to end before deleting the file", param="file_id",
                       code="file_in_use")  # fmt: skip
    path = stored_path(record)
    db.delete(record)
    db.commit()
    path.unlink(missing_ok=True)
