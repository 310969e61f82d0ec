"""Repositories: add (opened or initialised by a proxy first), list, check, remove."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, select

from ferryman.server.api import inputs
from ferryman.server.api.deps import Caller, get_ctx, lookup, require
from ferryman.server.api.errors import FieldError
from ferryman.server.api.views import repository_view, session_view
from ferryman.server.api.waiting import wait_for_task
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, Probe, Repository, Session
from ferryman.server.roles import Role
from ferryman.server.sessions import start_single_task_session

router = APIRouter(prefix="/repositories", tags=["repositories"])
ATTACH_TIMEOUT = 120.0


class RepositoryIn(BaseModel):
    name: str = inputs.Name()  # type: ignore[assignment]
    url: str
    passphrase: str | None = Field(default=None, repr=False)
    access_key: str | None = Field(default=None, repr=False)
    secret_key: str | None = Field(default=None, repr=False)
    max_tasks: int = Field(default=8, ge=1, le=1000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return inputs.repository_url(value)


class CheckIn(BaseModel):
    read_data: bool = False


def store_repository(ctx: ServerContext, db, body: RepositoryIn) -> Repository:  # type: ignore[no-untyped-def]
    repo = Repository(name=body.name, url=body.url, passphrase_secret="", max_tasks=body.max_tasks)
    db.add(repo)
    db.flush()
    box = ctx.secrets
    repo.passphrase_secret = box.encrypt(body.passphrase or "", f"repository:{repo.id}:passphrase")
    if body.access_key and body.secret_key:
        repo.access_key_secret = box.encrypt(body.access_key, f"repository:{repo.id}:access_key")
        repo.secret_key_secret = box.encrypt(body.secret_key, f"repository:{repo.id}:secret_key")
    return repo


@router.post("", status_code=201)
def add_repository(
    body: RepositoryIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    if not body.passphrase:
        raise FieldError(422, "passphrase is required to add a repository", "passphrase")
    if bool(body.access_key) != bool(body.secret_key):
        raise FieldError(422, "give both access_key and secret_key, or neither", "access_key")
    with ctx.db.session() as db:
        if db.scalar(select(Repository).where(Repository.name == body.name)):
            raise FieldError(409, f"a repository named '{body.name}' already exists", "name")
        repo = store_repository(ctx, db, body)
        session = start_single_task_session(db, "attach", repo, {}, priority=100)
        repo_id, session_id = repo.id, session.id
    try:
        task = wait_for_task(ctx, session_id, ATTACH_TIMEOUT)
    except HTTPException:
        _forget(ctx, repo_id)
        raise
    if task.state not in ("success", "warning"):
        _forget(ctx, repo_id)
        raise FieldError(400, f"cannot use repository '{body.name}': {task.error}", "url")
    with ctx.db.session() as db:
        return repository_view(db.get(Repository, repo_id))  # type: ignore[arg-type]


def _forget(ctx: ServerContext, repo_id: int) -> None:
    with ctx.db.session() as db:
        repo = db.get(Repository, repo_id)
        if repo is not None:
            db.delete(repo)


@router.get("")
def list_repositories(
    ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> list[dict[str, Any]]:
    with ctx.db.session() as db:
        return [repository_view(r) for r in db.scalars(select(Repository).order_by(Repository.id))]


@router.get("/{ref}")
def show_repository(
    ref: str, ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> dict[str, Any]:
    with ctx.db.session() as db:
        return repository_view(lookup(db, Repository, ref, "repository"))


class RepositoryChange(BaseModel):
    """`PATCH /repositories/{ref}`: task limit and S3 keys; name, url, passphrase stay."""

    name: str | None = Field(default=None, max_length=200)
    url: str | None = Field(default=None, max_length=4096)
    max_tasks: int | None = Field(default=None, ge=1, le=1000)
    access_key: str | None = Field(default=None, repr=False, max_length=1024)
    secret_key: str | None = Field(default=None, repr=False, max_length=1024)


@router.patch("/{ref}")
def change_repository(
    ref: str,
    body: RepositoryChange,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> dict[str, Any]:
    """Change how many tasks may write at once, or an S3 repository's keys."""
    given = body.model_fields_set
    with ctx.db.session() as db:
        repo = lookup(db, Repository, ref, "repository")
        if body.name is not None and body.name != repo.name:
            raise FieldError(422, "a repository's name cannot be changed", "name")
        if body.url is not None and body.url != repo.url:
            raise FieldError(422, "a repository's url cannot be changed", "url")
        if "max_tasks" in given:
            if body.max_tasks is None:
                raise FieldError(422, "max_tasks must be an integer from 1 to 1000", "max_tasks")
            repo.max_tasks = body.max_tasks
        if given & {"access_key", "secret_key"}:
            if not repo.url.startswith("s3://"):
                raise FieldError(422, "keys only apply to s3:// repositories", "access_key")
            if not body.access_key or not body.secret_key:
                raise FieldError(422, "give both access_key and secret_key", "access_key")
            box = ctx.secrets
            repo.access_key_secret = box.encrypt(
                body.access_key, f"repository:{repo.id}:access_key"
            )
            repo.secret_key_secret = box.encrypt(
                body.secret_key, f"repository:{repo.id}:secret_key"
            )
            # probes made with the old keys say nothing about the new ones
            db.execute(delete(Probe).where(Probe.kind == "repository", Probe.target_id == repo.id))
        view = repository_view(repo)
    ctx.signals.wake_all_proxies()
    return view


@router.post("/{ref}/check", status_code=201)
def check_repository(
    ref: str,
    body: CheckIn | None = None,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.operator)),
) -> dict[str, Any]:
    read_data = bool(body and body.read_data)
    with ctx.db.session() as db:
        repo = lookup(db, Repository, ref, "repository")
        session = start_single_task_session(
            db, "check", repo, {"read_data": read_data}, job_name=None, priority=60
        )
        view = session_view(db, session)
    ctx.signals.dispatch.set()
    return view


@router.post("/{ref}/gc", status_code=201)
def collect_garbage(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.operator)),
) -> dict[str, Any]:
    """A maintenance session: garbage collection on a proxy that reaches the repository."""
    with ctx.db.session() as db:
        repo = lookup(db, Repository, ref, "repository")
        session = start_single_task_session(
            db, "maintenance", repo, {"delete": [], "gc": True}, job_name=None, priority=60
        )
        view = session_view(db, session)
    ctx.signals.dispatch.set()
    return view


@router.delete("/{ref}", status_code=204)
def remove_repository(
    ref: str,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.administrator)),
) -> Response:
    with ctx.db.session() as db:
        repo = lookup(db, Repository, ref, "repository")
        jobs = [j.name for j in db.scalars(select(Job).where(Job.repository_id == repo.id))]
        if jobs:
            raise HTTPException(
                409, f"repository '{repo.name}' is used by job(s): {', '.join(jobs)}"
            )
        running = db.scalar(
            select(Session.id).where(Session.repository_id == repo.id, Session.status == "running")
        )
        if running:
            raise HTTPException(409, f"repository '{repo.name}' has a running session ({running})")
        db.delete(repo)
    return Response(status_code=204)
