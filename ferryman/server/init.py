"""`ferryman server init`: create a server home with everything a first run needs."""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from ferryman.server.api.inputs import NAME_PATTERN
from ferryman.server.ca import CertificateAuthority
from ferryman.server.config import ServerConfig, validate_listen
from ferryman.server.db.engine import Database
from ferryman.server.db.models import Proxy, Repository
from ferryman.server.home import ServerHome
from ferryman.server.home import home as resolve_home
from ferryman.server.roles import Role
from ferryman.server.secrets import SecretBox
from ferryman.server.tokens import create_api_token
from ferryman.server.users import add_user, check_password

EMBEDDED_PROXY_NAME = "embedded"
DEFAULT_REPOSITORY_NAME = "default"


class InitError(Exception):
    """The home cannot be initialised (already a server home, bad option...)."""


@dataclass(frozen=True)
class InitResult:
    home: Path
    url: str
    client_config: Path
    token: str = field(repr=False)
    db_url: str


def write_client_config(home: ServerHome, url: str, token: str) -> None:
    data = {"server": url, "token": token, "ca": str(home.ca_cert)}
    fd = os.open(home.client_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")


def init_server(
    home: str | os.PathLike[str] | None = None,
    listen: str | None = None,
    db_url: str | None = None,
    *,
    scrypt_n: int | None = None,
    admin_user: tuple[str, str] | None = None,
) -> InitResult:
    """Create the home, database (migrated), CA and server certificate, an administrator
    token in `client.json`, the default repository, and register the embedded proxy.
    ``admin_user`` (name, password) also adds an administrator who signs in to the console."""
    if admin_user is not None:
        try:
            check_user(*admin_user)
        except ValueError as exc:
            raise InitError(f"--admin-user: {exc}") from exc
    root = resolve_home(home)
    layout = ServerHome(root)
    if layout.config.exists():
        raise InitError(f"{root} is already a Ferryman server home (server.json exists)")
    config = ServerConfig(listen=validate_listen(listen or "127.0.0.1:8443"))
    config.db_url = db_url or f"sqlite:///{layout.database}"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    layout.ca_dir.mkdir(exist_ok=True)
    layout.tls_cert.parent.mkdir(exist_ok=True)

    database = Database(config.db_url)
    try:
        database.migrate()
    except Exception as exc:
        raise InitError(f"cannot prepare the database {_safe_url(config.db_url)}: {exc}") from exc
    with database.session() as db:
        if db.scalar(select(Repository.id).limit(1)) is not None:
            database.dispose()
            raise InitError(
                f"the database {_safe_url(config.db_url)} already holds a Ferryman installation"
            )
    box = SecretBox.create(layout.secret_key)
    ca = CertificateAuthority.create(layout.ca_cert, layout.ca_key)
    ca.issue_server_certificate(layout.tls_cert, layout.tls_key, config.host)

    passphrase = secrets.token_urlsafe(32)
    _init_default_repository(layout.default_repository, passphrase, scrypt_n)
    with database.session() as db:
        repo = Repository(
            name=DEFAULT_REPOSITORY_NAME, url=str(layout.default_repository), passphrase_secret=""
        )
        db.add(repo)
        db.flush()
        repo.passphrase_secret = box.encrypt(passphrase, f"repository:{repo.id}:passphrase")
        db.add(Proxy(name=EMBEDDED_PROXY_NAME, embedded=True, slots=1, version=None))
        _, token = create_api_token(db, "administrator (server init)", Role.administrator)
        if admin_user is not None:
            add_user(db, admin_user[0], Role.administrator, admin_user[1])
    database.dispose()
    config.save(layout.config)
    write_client_config(layout, config.url, token)
    return InitResult(root, config.url, layout.client_config, token, config.db_url)


def check_user(name: str, password: str) -> None:
    """ValueError when a user could not be created with this name and password."""
    if not re.fullmatch(NAME_PATTERN, name) or len(name) > 200:
        raise ValueError(f"invalid user name {name!r}: letters, digits, '.', '_', '-'")
    check_password(password)


def _init_default_repository(path: Path, passphrase: str, scrypt_n: int | None) -> None:
    from ferryman.repository import Repository as Repo
    from ferryman.repository import open_backend

    path.mkdir(parents=True, exist_ok=True)
    backend = open_backend(str(path))
    repo = (
        Repo.init(backend, passphrase, scrypt_n=scrypt_n)
        if scrypt_n
        else Repo.init(backend, passphrase)
    )
    repo.close()


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
