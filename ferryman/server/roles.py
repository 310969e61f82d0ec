"""API roles and what each may do. Each role includes the ones below it."""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    viewer = 1
    restore_operator = 2
    operator = 3
    administrator = 4

    @property
    def label(self) -> str:
        return self.name.replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.replace("-", "_").strip().lower()]
        except KeyError as exc:
            names = ", ".join(r.label for r in cls)
            raise ValueError(f"unknown role {text!r}; choose one of {names}") from exc


def allows(held: Role, needed: Role) -> bool:
    return held >= needed
