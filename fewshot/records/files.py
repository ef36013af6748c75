"""Uploaded files (POST /v1/files) and batch results: bytes on disk under MODEL_PATH/files, shared by
every process and machine that shares MODEL_PATH, as the model store is.

A file is `<id>` (its bytes) and `<id>.json` (what OpenAI's file object says of it). Both are written
under a temporary name and renamed, the description last: a reader sees a whole file or none. Files
expire BATCH_FILE_DAYS after they were made (OpenAI's `expires_at`); a batch worker's sweep deletes them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

FilePurpose = Literal["batch", "batch_output"]
FILE_ID = re.compile(r"^file-[0-9a-f]{32}$")
COPY_CHUNK_BYTES = 1024 * 1024


class FileTooLarge(Exception):
    """More bytes than MAX_FILE_BYTES arrived (the request declared fewer)."""


class StoredFile(BaseModel):
    """OpenAI's file object, as kept beside the bytes."""

    id: str
    bytes: int
    created_at: int
    """Unix seconds, as OpenAI's."""
    filename: str
    purpose: FilePurpose
    expires_at: int | None = None


class FileStore:
    def __init__(self, directory: Path, keep_days: float) -> None:
        self._directory = directory
        self._keep_seconds = keep_days * 86400

    def path(self, file_id: str) -> Path:
        if not FILE_ID.match(file_id):
            raise KeyError(file_id)
        return self._directory / file_id

    def save(self, chunks: Iterable[bytes], filename: str, purpose: FilePurpose, max_bytes: int) -> StoredFile:
        """Write the chunks as a new file; FileTooLarge (and nothing kept) past `max_bytes`."""
        file_id = f"file-{uuid.uuid4().hex}"
        self._directory.mkdir(parents=True, exist_ok=True)
        partial = self._directory / f".{file_id}.partial"
        size = 0
        try:
            with open(partial, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise FileTooLarge(f"file: more than MAX_FILE_BYTES={max_bytes} bytes")
                    out.write(chunk)
            return self._publish(file_id, partial, size, filename, purpose)
        finally:
            partial.unlink(missing_ok=True)

    def adopt(self, written: Path, filename: str, purpose: FilePurpose) -> StoredFile:
        """Move a file written elsewhere on this file system (a batch's results) into the store."""
        file_id = f"file-{uuid.uuid4().hex}"
        self._directory.mkdir(parents=True, exist_ok=True)
        partial = self._directory / f".{file_id}.partial"
        shutil.move(written, partial)
        return self._publish(file_id, partial, partial.stat().st_size, filename, purpose)

    def _publish(self, file_id: str, partial: Path, size: int, filename: str, purpose: FilePurpose) -> StoredFile:
        now = int(time.time())
        stored = StoredFile(id=file_id, bytes=size, created_at=now, filename=filename, purpose=purpose,
                            expires_at=int(now + self._keep_seconds))
        os.replace(partial, self._directory / file_id)
        description = self._directory / f".{file_id}.json.partial"
        description.write_text(stored.model_dump_json())
        os.replace(description, self._directory / f"{file_id}.json")
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        try:
            return StoredFile.model_validate_json((self.path(file_id).with_suffix(".json")).read_text())
        except (KeyError, FileNotFoundError):
            return None

    def delete(self, file_id: str) -> bool:
        try:
            description = self.path(file_id).with_suffix(".json")
        except KeyError:
            return False
        existed = description.exists()
        description.unlink(missing_ok=True)  # first: from here on it is gone for every reader
        self.path(file_id).unlink(missing_ok=True)
        return existed

    def list(self, purpose: str | None = None) -> list[StoredFile]:
        """Every file, newest first."""
        found = []
        for description in self._directory.glob("file-*.json") if self._directory.is_dir() else ():
            try:
                stored = StoredFile.model_validate_json(description.read_text())
            except (FileNotFoundError, ValueError):
                continue  # deleted meanwhile
            if purpose is None or stored.purpose == purpose:
                found.append(stored)
        return sorted(found, key=lambda stored: (stored.created_at, stored.id), reverse=True)

    def delete_expired(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        expired = [stored.id for stored in self.list() if stored.expires_at is not None and stored.expires_at <= now]
        for file_id in expired:
            self.delete(file_id)
        return expired

