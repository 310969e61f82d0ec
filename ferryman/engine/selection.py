"""Which entries a backup covers: partition subtrees, include/exclude globs."""

from __future__ import annotations

import fnmatch
import os
import re

from ferryman.engine.options import InvalidOptions
from ferryman.sources.base import UnsafeName, check_name

# None = the whole subtree below this point is selected
Selection = dict[bytes, "Selection | None"]


def build_selection(paths: list[bytes]) -> Selection | None:
    """A trie of the partition's subtrees (``None`` = the whole share)."""
    if not paths:
        return None
    root: Selection = {}
    for raw in paths:
        parts = [p for p in raw.strip(b"/").split(b"/") if p]
        if not parts:
            return None  # the root itself is selected
        try:
            for p in parts:
                check_name(p)
        except UnsafeName as exc:
            raise InvalidOptions(f"partition path {raw!r}: {exc}") from exc
        node: Selection = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = None
                break
            child = node.get(part, {})
            if child is None:
                break  # an ancestor is already fully selected
            node[part] = child
            node = child
    return root


class PathFilter:
    """Include/exclude glob masks (fnmatch; ``/`` in a pattern matches the relative path).

    Patterns without a ``/`` match the entry name at any depth (``*.tmp``); patterns
    with one match the path relative to the share root (``cache/*``). Excludes apply
    to every entry (an excluded directory is not descended); includes, when given,
    select which non-directories are kept.
    """

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self._inc_name, self._inc_path = self._compile(include)
        self._exc_name, self._exc_path = self._compile(exclude)
        self.has_include = bool(include)
        self.active = bool(include or exclude)

    @staticmethod
    def _compile(patterns: list[str]) -> tuple[re.Pattern[bytes] | None, re.Pattern[bytes] | None]:
        names = [p for p in patterns if "/" not in p.strip("/")]
        paths = [p.strip("/") for p in patterns if "/" in p.strip("/")]

        def join(pats: list[str]) -> re.Pattern[bytes] | None:
            if not pats:
                return None
            rx = "|".join(f"(?:{fnmatch.translate(p)})" for p in pats)
            return re.compile(os.fsencode(rx), re.S)

        return join(names), join(paths)

    def regexes(self) -> tuple[bytes | None, bytes | None, bytes | None, bytes | None]:
        """The compiled masks' sources: exclude by name, by path, include by name, by
        path (None: no such mask), for a process that applies them again (``re.S``)."""
        return tuple(  # type: ignore[return-value]
            rx.pattern if rx is not None else None
            for rx in (self._exc_name, self._exc_path, self._inc_name, self._inc_path)
        )

    def excluded(self, name: bytes, rel: bytes) -> bool:
        """Whether an entry is excluded."""
        if self._exc_name is not None and self._exc_name.match(name):
            return True
        return self._exc_path is not None and self._exc_path.match(rel) is not None

    def included(self, name: bytes, rel: bytes) -> bool:
        """Whether a non-directory passes the include masks."""
        if not self.has_include:
            return True
        if self._inc_name is not None and self._inc_name.match(name):
            return True
        return self._inc_path is not None and self._inc_path.match(rel) is not None
