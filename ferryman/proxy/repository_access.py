"""Opening the repository a task names, with this proxy's local cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferryman.proxy.protocol import RepositoryAccess


def open_repository(access: RepositoryAccess, cache_dir: Path, create: bool = False) -> Any:
    """Open (or, with `create`, initialise when empty) the repository; passphrase never logged."""
    from ferryman.repository import NotARepository, Repository, open_backend

    credentials: dict[str, str] = {}
    if access.access_key and access.secret_key:
        credentials = {"access_key": access.access_key, "secret_key": access.secret_key}
    if not access.url.startswith("s3://"):
        Path(access.url).mkdir(parents=True, exist_ok=True) if create else None
    backend = open_backend(access.url, **credentials)
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        return Repository.open(backend, access.passphrase, cache_dir=cache_dir)
    except NotARepository:
        if not create:
            raise
        return Repository.init(backend, access.passphrase, cache_dir=cache_dir)
