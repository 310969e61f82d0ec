"""Console users: names, roles and scrypt password hashes (the password is never stored)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from ferryman.server.db.models import User
from ferryman.server.roles import Role
from ferryman.server.web_sessions import close_user_sessions

# hashlib.scrypt cost: 16 MiB of memory and some 50 ms per check on one core.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


class UserError(ValueError):
    """A user cannot be created or changed (bad password, name taken...)."""


class NameTaken(UserError):
    """Another user already has this name."""


class LastAdministrator(UserError):
    """Removing this user would leave no administrator who can sign in to the console."""


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password must have at most {MAX_PASSWORD} characters")
    if "\x00" in password:
        raise UserError("the password contains a NUL character")
    return password


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, dklen=32
    )


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (hex), with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison against a stored hash; False for any malformed hash."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
        return hmac.compare_digest(digest, bytes.fromhex(expected))
    except ValueError:
        return False


# Checked against when the user is unknown, so that both answers take the same time.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def find_user(db: Session, name: str) -> User | None:
    return db.scalar(select(User).where(User.name == name))


def authenticate(db: Session, name: str, password: str) -> User | None:
    """The user if the password matches; None for a wrong password or an unknown name."""
    user = find_user(db, name)
    if user is None:
        verify_password(password, _DUMMY_HASH)
        return None
    return user if verify_password(password, user.password_hash) else None


def add_user(db: Session, name: str, role: Role, password: str) -> User:
    if find_user(db, name) is not None:
        raise NameTaken(f"a user named '{name}' already exists")
    user = User(name=name, role=role.label, password_hash=hash_password(check_password(password)))
    db.add(user)
    db.flush()
    return user


def set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(check_password(password))


def remove_user(db: Session, user: User) -> None:
    """Delete ``user`` and end their console sessions; refused for the last administrator
    (nobody could manage users then).

    Two removals at once cannot leave none: the administrators' rows are locked first
    (``FOR UPDATE`` on PostgreSQL), and those left are counted after the deletion, inside
    its transaction (on SQLite only the deletion's write lock orders two removals: a
    count read before it could miss the other's commit). ``LastAdministrator`` is then
    raised with the deletion pending in ``db``: the caller rolls back.
    """
    admin = Role.administrator.label
    db.scalars(select(User.id).where(User.role == admin).with_for_update()).all()
    close_user_sessions(db, user.id)
    db.delete(user)
    db.flush()
    if user.role == admin and db.scalar(select(User.id).where(User.role == admin).limit(1)) is None:
        raise LastAdministrator(
            f"'{user.name}' is the last administrator; add another administrator first"
        )
