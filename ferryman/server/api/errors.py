"""HTTP errors that name the input at fault, so the console shows them next to that field."""

from __future__ import annotations

from typing import TypeVar

from fastapi import HTTPException
from sqlalchemy.orm import Session as DbSession

from ferryman.server.api.deps import lookup

T = TypeVar("T")


class FieldError(HTTPException):
    """A 4xx answer ``{"detail": ..., "field": ...}`` about one input field."""

    def __init__(self, status_code: int, detail: str, field: str) -> None:
        super().__init__(status_code, detail)
        self.field = field


def field_lookup(db: DbSession, model: type[T], ref: str, what: str, field: str) -> T:
    """`deps.lookup` for an object named in a request body: its 404 names the field."""
    try:
        return lookup(db, model, ref, what)
    except HTTPException as exc:
        raise FieldError(exc.status_code, str(exc.detail), field) from exc
