"""Restore points, browsing, versions of a file, and restores."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ferryman.proxy import path_names
from ferryman.server.api import inputs
from ferryman.server.api.deps import Caller, get_ctx, lookup, require
from ferryman.server.api.views import point_view, session_view
from ferryman.server.api.waiting import wait_for_task
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Job, Repository, RestorePoint, Session, Share
from ferryman.server.roles import Role
from ferryman.server.sessions import start_restore_session, start_single_task_session

router = APIRouter(tags=["restore points"])
BROWSE_TIMEOUT = 60.0


def _repo_names(db: DbSession) -> dict[int, str]:
    return {r.id: r.name for r in db.scalars(select(Repository))}


def _point(db: DbSession, ref: str) -> RestorePoint:
    point = None
    if ref.isdigit() and len(ref) <= 15:
        point = db.get(RestorePoint, int(ref))
    if point is None:
        point = db.scalar(select(RestorePoint).where(RestorePoint.point_id == ref))
    if point is None:
        raise HTTPException(404, f"unknown restore point '{ref}'")
    return point


@router.get("/points")
def list_points(
    share: str | None = None,
    job: str | None = None,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.viewer)),
) -> list[dict[str, Any]]:
    with ctx.db.session() as db:
        query = (
            select(RestorePoint, Session.id)
            .outerjoin(Session, Session.id == RestorePoint.session_id)
            .order_by(RestorePoint.time, RestorePoint.id)
        )
        if share is not None:
            query = query.where(RestorePoint.share_id == lookup(db, Share, share, "share").id)
        if job is not None:
            query = query.where(RestorePoint.job_id == lookup(db, Job, job, "job").id)
        names = _repo_names(db)
        return [point_view(p, names, kept is not None) for p, kept in db.execute(query)]


@router.get("/points/{ref}")
def show_point(
    ref: str, ctx: ServerContext = Depends(get_ctx), _: Caller = Depends(require(Role.viewer))
) -> dict[str, Any]:
    with ctx.db.session() as db:
        point = _point(db, ref)
        sid = point.session_id
        kept = sid is not None and db.get(Session, sid) is not None
        return point_view(point, _repo_names(db), kept)


def _raw_path(path: str, path_b64: str | None) -> dict[str, str]:
    """Browse parameters naming a path exactly: its display text and its bytes in base64."""
    try:
        raw = path_names.from_b64(path_b64) if path_b64 is not None else path_names.parse(path)
    except path_names.BadPath as exc:
        raise HTTPException(422, str(exc)) from exc
    if b"\x00" in raw:
        raise HTTPException(422, "path contains a NUL byte")
    if len(raw) > 4096:
        raise HTTPException(422, "path is longer than 4096 bytes")
    return {"path": path_names.display(raw), "path_b64": path_names.b64(raw)}


def _browse(ctx: ServerContext, point: RestorePoint, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.db.session() as db:
        repo = db.get(Repository, point.repository_id)
        if repo is None:
            raise HTTPException(404, "the repository of this restore point was removed")
        session = start_single_task_session(db, "browse", repo, params, priority=100)
        session_id = session.id
    task = wait_for_task(ctx, session_id, BROWSE_TIMEOUT)
    if task.state not in ("success", "warning"):
        status = 404 if (task.output or {}).get("not_found") else 400
        raise HTTPException(status, task.error or "browsing failed")
    return task.output or {}


@router.get("/points/{ref}/ls")
def list_point(
    ref: str,
    path: str = Query(default="/", max_length=4096, pattern=r"^[^\x00]*$"),
    path_b64: str | None = Query(default=None, max_length=8192),
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.restore_operator)),
) -> list[dict[str, Any]]:
    where = _raw_path(path, path_b64)
    with ctx.db.session() as db:
        point = _point(db, ref)
        db.expunge(point)
    output = _browse(ctx, point, {"op": "ls", "point_ids": [point.point_id], **where})
    return list(output.get("entries", []))


@router.get("/versions")
def versions(
    share: str,
    path: str = Query(default="", max_length=4096, pattern=r"^[^\x00]*$"),
    path_b64: str | None = Query(default=None, max_length=8192),
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.restore_operator)),
) -> list[dict[str, Any]]:
    if not path and path_b64 is None:
        raise HTTPException(422, "path: give path or path_b64")
    where = _raw_path(path, path_b64)
    with ctx.db.session() as db:
        share_row = lookup(db, Share, share, "share")
        db.expunge(share_row)
        points = list(
            db.scalars(
                select(RestorePoint)
                .where(RestorePoint.share_id == share_row.id)
                .order_by(RestorePoint.time, RestorePoint.id)
            )
        )
        for p in points:
            db.expunge(p)
    if not points:
        return []
    answer: list[dict[str, Any]] = []
    by_repo: dict[int, list[RestorePoint]] = {}
    for p in points:
        by_repo.setdefault(p.repository_id, []).append(p)
    for group in by_repo.values():
        ids = [p.point_id for p in group]
        output = _browse(
            ctx,
            group[0],
            {"op": "versions", "share": share_row.name, "point_ids": ids, **where},
        )
        found = {v["point_id"]: v for v in output.get("versions", [])}
        for p in group:
            if p.point_id in found:
                entry = dict(found[p.point_id])
                entry.pop("point_id", None)
                answer.append({"point": p.id, "time": point_view(p, {})["time"], **entry})
    answer.sort(key=lambda v: (v["time"], v["point"]))
    return answer


class RestoreIn(BaseModel):
    point: str | int
    paths: list[str] = []
    # exact bytes of paths whose names are not UTF-8 (base64), besides or instead of paths
    paths_b64: list[str] = []
    to: str | None = None
    in_place: bool = False
    overwrite: Literal["replace", "skip", "keep-both", "if-newer"] = "replace"

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return [inputs.no_nul(p, "path") for p in value]

    @field_validator("to")
    @classmethod
    def _to(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(("s3://", "smb://")):  # a bucket, an SMB share
            return inputs.share_url(value)
        return None if value is None else inputs.local_path(value, "restore target")

    @model_validator(mode="after")
    def _target(self) -> RestoreIn:
        if (self.to is None) == (not self.in_place):
            raise ValueError("give exactly one of 'to' (a path) and 'in_place': true")
        return self


@router.post("/restores", status_code=201)
def restore(
    body: RestoreIn,
    ctx: ServerContext = Depends(get_ctx),
    _: Caller = Depends(require(Role.restore_operator)),
) -> dict[str, Any]:
    with ctx.db.session() as db:
        point = _point(db, str(body.point))
        repo = db.get(Repository, point.repository_id)
        if repo is None:
            raise HTTPException(404, "the repository of this restore point was removed")
        share = db.get(Share, point.share_id) if point.share_id else None
        if body.in_place and share is None:
            raise HTTPException(
                409, "the share of this restore point was removed; restore --to a path"
            )
        target = share.url if body.in_place and share else body.to
        raw_paths = [_raw_path(p, None) for p in body.paths]
        raw_paths += [_raw_path("", p) for p in body.paths_b64]
        params = {
            "point_id": point.point_id,
            "point": point.id,
            "paths": [p["path"] for p in raw_paths],
            "paths_b64": [p["path_b64"] for p in raw_paths],
            "target": target,
            "in_place": body.in_place,
            "overwrite": body.overwrite,
        }
        cfg = ctx.config
        session = start_restore_session(
            db,
            repo,
            share,
            params,
            point.job_name,
            cfg.max_partitions,
            (cfg.partition_min_bytes, cfg.partition_min_files),
        )
        view = session_view(db, session)
    ctx.signals.dispatch.set()
    return view
