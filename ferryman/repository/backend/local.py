"""Local-directory backend: atomic writes via temp file, fsync, rename, directory fsync."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ferryman.repository.backend.base import check_name
from ferryman.repository.errors import BackendError, ObjectNotFound

TMP_PREFIX = ".tmp-"


class LocalBackend:
    """Objects are files under ``root``; names map to relative paths."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).absolute()
        self.fsync = fsync

    def describe(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def _fsync_dir(self, path: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ensure_dir(self, path: Path) -> None:
        if path.is_dir():
            return
        self._ensure_dir(path.parent)
        try:
            path.mkdir()
        except FileExistsError:
            return
        self._fsync_dir(path.parent)

    def get(self, name: str) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectNotFound(f"{name}: not found in {self.root}") from None
        except OSError as exc:
            raise BackendError(f"{name}: cannot read from {self.root}: {exc.strerror}") from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative range")
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectNotFound(f"{name}: not found in {self.root}") from None
        except OSError as exc:
            raise BackendError(f"{name}: cannot read from {self.root}: {exc.strerror}") from None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def put(self, name: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(name)
        try:
            self._ensure_dir(path.parent)
            tmp = path.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            self._fsync_dir(path.parent)
        except OSError as exc:
            if "tmp" in locals():
                # best effort: a leftover temp file is ignored by list()
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise BackendError(f"{name}: cannot write to {self.root}: {exc.strerror}") from None

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            os.unlink(path)
            # Durable deletes keep GC's order (segments before packs) across a power loss.
            self._fsync_dir(path.parent)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendError(f"{name}: cannot delete in {self.root}: {exc.strerror}") from None

    def list(self, prefix: str) -> Iterator[str]:
        # Walk only the directory the prefix names (prefixes end at a "/" or name part).
        base_dir, _, _ = prefix.rpartition("/")
        start = self.root / base_dir if base_dir else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for fname in sorted(filenames):
                if fname.startswith(TMP_PREFIX):
                    continue
                name = fname if rel_dir == "." else f"{rel_dir}/{fname}"
                if name.startswith(prefix):
                    yield name

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"{name}: not found in {self.root}") from None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise ObjectNotFound(f"{name}: not found in {self.root}") from None
            raise BackendError(f"{name}: cannot stat in {self.root}: {exc.strerror}") from None
