"""Console sign-in (password or API token, a cookie session), sign-out, and the user list."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import select

from ferryman.server.api import inputs
from ferryman.server.api.deps import CSRF_HEADER, Caller, get_ctx, lookup, require
from ferryman.server.api.errors import FieldError
from ferryman.server.api.views import iso
from ferryman.server.context import ServerContext
from ferryman.server.db.models import User, utcnow
from ferryman.server.roles import Role
from ferryman.server.sign_in_throttle import SignInLocked, SignInThrottle
from ferryman.server.tokens import find_api_token
from ferryman.server.users import (
    LastAdministrator,
    NameTaken,
    UserError,
    add_user,
    authenticate,
    remove_user,
    set_password,
)
from ferryman.server.web_sessions import (
    COOKIE,
    IDLE_TIMEOUT,
    close_user_sessions,
    close_web_session,
    open_web_session,
)

router = APIRouter(tags=["users"])

WRONG_LOGIN = "wrong user name or password"
# Added to each refused sign-in, on top of the scrypt check, to slow down guessing.
FAILED_LOGIN_DELAY = 0.3


class LoginIn(BaseModel):
    user: str | None = Field(default=None, max_length=200)
    password: str | None = Field(default=None, max_length=1024, repr=False)
    token: str | None = Field(default=None, max_length=200, repr=False)

    @model_validator(mode="after")
    def _one_way(self) -> LoginIn:
        if self.token is not None:
            if self.user is not None or self.password is not None:
                raise ValueError("give either user and password, or token")
        elif self.user is None or self.password is None:
            raise ValueError("give user and password, or token")
        return self


def _sign_in(ctx: ServerContext, body: LoginIn, previous: str | None) -> tuple[str, str, str]:
    """``(name, role, cookie)`` of a new console session; HTTPException 401 when refused."""
    with ctx.db.session() as db:
        if previous:
            close_web_session(db, previous)
        if body.token is not None:
            token = find_api_token(db, body.token.strip())
            if token is None:
                raise HTTPException(401, "unknown or revoked API token")
            return token.name, token.role, open_web_session(db, token=token)
        assert body.user is not None and body.password is not None
        user = authenticate(db, body.user, body.password)
        if user is None:
            raise HTTPException(401, WRONG_LOGIN)
        user.last_login = utcnow()
        return user.name, user.role, open_web_session(db, user=user)


@router.post("/login")
def login(
    body: LoginIn, request: Request, response: Response, ctx: ServerContext = Depends(get_ctx)
) -> Any:
    """Sign in to the console; the answer sets the ``ferryman_session`` cookie (a session
    the browser held before ends). Too many failures for one user name or from one address
    answer 429 with ``Retry-After`` before any password is checked."""
    throttle: SignInThrottle = request.app.state.sign_in_throttle
    try:
        attempt = throttle.begin(
            body.user if body.token is None else None,
            request.client.host if request.client else None,
        )
    except SignInLocked as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
    try:
        name, role, cookie = _sign_in(ctx, body, request.cookies.get(COOKIE))
    except HTTPException:
        throttle.failed(attempt)
        time.sleep(FAILED_LOGIN_DELAY)
        raise
    except BaseException:
        throttle.abandoned(attempt)
        raise
    throttle.succeeded(attempt)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(IDLE_TIMEOUT.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return {"name": name, "role": role}


@router.post("/logout", status_code=204)
def logout(request: Request, ctx: ServerContext = Depends(get_ctx)) -> Response:
    """Sign out: the session is deleted and the cookie cleared (204 even without one).

    Like every change made with the cookie, it needs ``X-Ferryman-Web: 1`` (another site's
    page must not sign the user out)."""
    cookie = request.cookies.get(COOKIE)
    if cookie and request.headers.get(CSRF_HEADER) != "1":
        raise HTTPException(403, "missing X-Ferryman-Web header")
    if cookie:
        with ctx.db.session() as db:
            close_web_session(db, cookie)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


class UserIn(BaseModel):
    name: str = inputs.Name()  # type: ignore[assignment]
    role: str = Field(max_length=40)
    password: str = Field(max_length=1024, repr=False)


class PasswordIn(BaseModel):
    password: str = Field(max_length=1024, repr=False)


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "created": iso(user.created),
        "last_login": iso(user.last_login),
    }


@router.get("/users")
def list_users(
    ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.administrator))
) -> list[dict[str, Any]]:
    with ctx.db.session() as db:
        return [user_view(u) for u in db.scalars(select(User).order_by(User.id))]


@router.post("/users", status_code=201)
def create_user(
    body: UserIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    try:
        role = Role.parse(body.role)
    except ValueError as exc:
        raise FieldError(422, str(exc), "role") from exc
    with ctx.db.session() as db:
        try:
            user = add_user(db, body.name, role, body.password)
        except NameTaken as exc:
            raise FieldError(409, str(exc), "name") from exc
        except UserError as exc:
            raise FieldError(422, str(exc), "password") from exc
        return user_view(user)


@router.post("/users/{ref}/password", status_code=204)
def change_password(
    ref: str,
    body: PasswordIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> Response:
    """Set a user's password; the user's console sessions end."""
    with ctx.db.session() as db:
        user = lookup(db, User, ref, "user")
        try:
            set_password(user, body.password)
        except UserError as exc:
            raise FieldError(422, str(exc), "password") from exc
        close_user_sessions(db, user.id)
    return Response(status_code=204)


@router.delete("/users/{ref}", status_code=204)
def delete_user(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> Response:
    """Remove a user; their console sessions end with it. The last administrator cannot
    be removed (409)."""
    with ctx.db.session() as db:
        user = lookup(db, User, ref, "user")
        try:
            remove_user(db, user)
        except LastAdministrator as exc:
            raise HTTPException(409, str(exc)) from exc
    return Response(status_code=204)
