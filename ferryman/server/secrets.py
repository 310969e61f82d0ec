"""Secrets at rest: AES-256-GCM under a server key file (0600) in the home.

Values are stored as `v1:<base64(nonce | ciphertext)>`; the purpose string
(e.g. `repository:3:passphrase`) is bound as associated data so a value cannot
be moved to another column or row.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class SecretError(Exception):
    """A secret could not be decrypted (wrong key file or tampered value)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretError("the server secret key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def create(cls, path: Path) -> SecretBox:
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> SecretBox:
        try:
            return cls(path.read_bytes())
        except FileNotFoundError as exc:
            raise SecretError(f"server secret key {path} is missing") from exc

    def encrypt(self, value: str, purpose: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode(), purpose.encode())
        return "v1:" + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str, purpose: str) -> str:
        if not stored.startswith("v1:"):
            raise SecretError(f"unknown secret format for {purpose}")
        raw = base64.b64decode(stored[3:])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], purpose.encode()).decode()
        except Exception as exc:
            raise SecretError(f"cannot decrypt secret {purpose}: wrong server key?") from exc
