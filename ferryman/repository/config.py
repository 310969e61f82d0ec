"""The plaintext ``config`` object: format name, version, id and chunker parameters."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from ferryman.repository.errors import CorruptObject, UnsupportedVersion

FORMAT_NAME = "ferryman-repository"
FORMAT_VERSION = 1
CONFIG_NAME = "config"

# Measured defaults (docs/decisions/0002): real mean chunk = avg + min ~= 1.25 MiB.
DEFAULT_CHUNK_AVG = 1 << 20
DEFAULT_CHUNK_MIN = 256 << 10
DEFAULT_CHUNK_MAX = 4 << 20


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC 2020 parameters; every writer of a repository must use the same ones."""

    avg_size: int = DEFAULT_CHUNK_AVG
    min_size: int = DEFAULT_CHUNK_MIN
    max_size: int = DEFAULT_CHUNK_MAX
    normalized_chunking: int = 1

    def validate(self) -> None:
        """Raise ``ValueError`` if pyfastcdc would refuse these parameters."""
        if not (256 <= self.avg_size <= 4 << 20):
            raise ValueError("chunker avg_size must be within [256, 4 MiB]")
        if not (64 <= self.min_size <= min(self.avg_size, 1 << 20)):
            raise ValueError("chunker min_size must be within [64, min(avg_size, 1 MiB)]")
        if not (max(self.avg_size, 1024) <= self.max_size <= 16 << 20):
            raise ValueError("chunker max_size must be within [max(avg_size, 1024), 16 MiB]")
        if self.normalized_chunking not in (0, 1, 2, 3):
            raise ValueError("normalized_chunking must be 0..3")


@dataclass(frozen=True)
class RepositoryConfig:
    """Contents of the ``config`` object."""

    id: str
    created: float
    chunker: ChunkerParams

    @classmethod
    def new(cls, chunker: ChunkerParams) -> RepositoryConfig:
        """A config for a fresh repository with a random id."""
        chunker.validate()
        return cls(id=secrets.token_hex(16), created=time.time(), chunker=chunker)

    def to_bytes(self) -> bytes:
        """Serialize as the plaintext JSON stored in ``config``."""
        doc = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "id": self.id,
            "created": self.created,
            "chunker": {"algorithm": "fastcdc2020", **asdict(self.chunker)},
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> RepositoryConfig:
        """Parse ``config``; refuse other formats and unknown versions."""
        try:
            doc: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise CorruptObject("config: not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise UnsupportedVersion(
                "config: this is not a Ferryman repository (format is "
                f"{doc.get('format') if isinstance(doc, dict) else None!r})"
            )
        version = doc.get("version")
        if version != FORMAT_VERSION:
            raise UnsupportedVersion(
                f"repository format version {version!r} is not supported by this Ferryman "
                f"(it reads version {FORMAT_VERSION}); upgrade Ferryman to open it"
            )
        try:
            ch = doc["chunker"]
            if ch.get("algorithm") != "fastcdc2020":
                raise UnsupportedVersion(f"config: unknown chunker {ch.get('algorithm')!r}")
            chunker = ChunkerParams(
                avg_size=int(ch["avg_size"]),
                min_size=int(ch["min_size"]),
                max_size=int(ch["max_size"]),
                normalized_chunking=int(ch["normalized_chunking"]),
            )
            chunker.validate()
            repo_id = str(doc["id"])
            bytes.fromhex(repo_id)
            return cls(id=repo_id, created=float(doc["created"]), chunker=chunker)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptObject(f"config: malformed ({exc})") from None
