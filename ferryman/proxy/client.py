"""A remote proxy's side of the wire: join with a token, then the protocol over mutual TLS."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ferryman
from ferryman.proxy import capabilities
from ferryman.proxy.protocol import (
    Heartbeat,
    HeartbeatReply,
    JoinRequest,
    JoinResponse,
    PollReply,
    TaskProgress,
    TaskReassigned,
    TaskResult,
)
from ferryman.proxy.service import ProxyRevoked


class JoinError(Exception):
    """Joining the server failed; the message says why."""


@dataclass
class ProxyIdentity:
    home: Path
    server: str
    name: str
    proxy_id: int
    site: str | None

    @property
    def key(self) -> Path:
        return self.home / "proxy.key"

    @property
    def cert(self) -> Path:
        return self.home / "proxy.pem"

    @property
    def ca(self) -> Path:
        return self.home / "ca.pem"

    @property
    def file(self) -> Path:
        return self.home / "proxy.json"

    def save(self) -> None:
        data = {
            "server": self.server,
            "name": self.name,
            "proxy_id": self.proxy_id,
            "site": self.site,
        }
        self.file.write_text(json.dumps(data, indent=2) + "\n")


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    chosen = home or os.environ.get("FERRYMAN_HOME") or "~/.ferryman"
    return Path(chosen).expanduser().resolve()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_key_and_csr(key_path: Path, name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]


def fetch_trusted_ca(server: str, fingerprint: str | None) -> bytes:
    """Download the server's CA and check it against the fingerprint carried by the join token."""
    try:
        response = httpx.get(f"{server}/api/v1/ca", verify=False, timeout=15)
    except httpx.HTTPError as exc:
        raise JoinError(f"cannot reach the server at {server}: {exc}") from exc
    if response.status_code != 200:
        raise JoinError(f"the server did not return its CA: {response.status_code}")
    pem = response.content
    if fingerprint is not None:
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        if hashlib.sha256(der).hexdigest() != fingerprint.lower():
            raise JoinError("the server's CA does not match the join token: refusing to join")
    return pem


def join_or_load(
    server: str,
    token: str | None,
    *,
    name: str | None,
    site: str | None,
    slots: int,
    home: str | os.PathLike[str] | None,
) -> ProxyIdentity:
    root = resolve_home(home)
    root.mkdir(parents=True, exist_ok=True)
    server = server.rstrip("/")
    existing = root / "proxy.json"
    if existing.exists():
        data = json.loads(existing.read_text())
        identity = ProxyIdentity(
            root, server or data["server"], data["name"], data["proxy_id"], data.get("site")
        )
        if site is not None:
            identity.site = site
        return identity
    if not token:
        raise JoinError(
            "this proxy has not joined yet: give --join-token (from `ferryman proxy join-token`)"
        )
    name = name or os.uname().nodename.split(".")[0]
    parts = token.strip().split("_")
    fingerprint = parts[2] if len(parts) == 3 and parts[0] == "fmj" else None
    identity = ProxyIdentity(root, server, name, 0, site)
    identity.ca.write_bytes(fetch_trusted_ca(server, fingerprint))
    csr = make_key_and_csr(identity.key, name)
    request = JoinRequest(
        token=token.strip(),
        csr_pem=csr,
        name=name,
        site=site,
        slots=slots,
        version=ferryman.__version__,
        addresses=capabilities.addresses(),
        capabilities=capabilities.detect(),
    )
    context = ssl.create_default_context(cafile=str(identity.ca))
    try:
        response = httpx.post(
            f"{server}/api/v1/proxies/join", json=request.model_dump(), verify=context, timeout=30
        )
    except httpx.HTTPError as exc:
        raise JoinError(f"cannot reach the server at {server}: {exc}") from exc
    if response.status_code != 200:
        raise JoinError(f"join refused: {_detail(response)}")
    joined = JoinResponse.model_validate(response.json())
    identity.cert.write_text(joined.certificate_pem)
    identity.ca.write_text(joined.ca_pem)
    identity.proxy_id = joined.proxy_id
    identity.name = joined.name
    identity.save()
    return identity


class HttpsChannel:
    """`ProxyChannel` over HTTPS with this proxy's client certificate."""

    def __init__(self, identity: ProxyIdentity, timeout: float = 30.0) -> None:
        context = ssl.create_default_context(cafile=str(identity.ca))
        context.load_cert_chain(str(identity.cert), str(identity.key))
        self._client = httpx.Client(base_url=identity.server, verify=context, timeout=timeout)

    def _post(
        self, path: str, body: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        response = self._client.post(
            path,
            json=body or {},
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        if response.status_code == 409:
            raise TaskReassigned(_detail(response))
        if response.status_code in (401, 403):
            raise ProxyRevoked(_detail(response))
        if response.status_code >= 400:
            raise RuntimeError(f"server answered {response.status_code}: {_detail(response)}")
        return response.json()

    def heartbeat(self, beat: Heartbeat) -> HeartbeatReply:
        return HeartbeatReply.model_validate(self._post("/proxy/v1/heartbeat", beat.model_dump()))

    def poll(self, timeout: float) -> PollReply:
        data = self._post(f"/proxy/v1/poll?timeout={timeout}", timeout=timeout + 15)
        return PollReply.model_validate(data)

    def progress(self, update: TaskProgress) -> None:
        self._post(f"/proxy/v1/tasks/{update.task_id}/progress", update.model_dump())

    def result(self, result: TaskResult) -> None:
        self._post(f"/proxy/v1/tasks/{result.task_id}/result", result.model_dump())

    def close(self) -> None:
        self._client.close()
