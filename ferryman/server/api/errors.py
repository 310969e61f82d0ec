"""HTTP errors that name the input at fault, so the console shows them next to that field."""

from __future__ import annotations

from fastapi import HTTPException


class FieldError(HTTPException):
    """A 4xx answer ``{"detail": ..., "field": ...}`` about one input field."""

    def __init__(self, status_code: int, detail: str, field: str) -> None:
        super().__init__(status_code, detail)
        self.field = field
