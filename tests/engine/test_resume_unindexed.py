"""A task resumed after its earlier attempt died between storing packs and indexing them
reuses those packs instead of sending their data again."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ferryman.engine.backup import run_backup
from ferryman.engine.options import BackupCancelled, BackupOptions
from ferryman.engine.restore import run_restore
from ferryman.repository import KIND_DATA, Repository, open_backend
from ferryman.repository.index import INDEX_PREFIX
from ferryman.sources import local
from ferryman.sources.local import LocalSource

from .conftest import PASSPHRASE
from .trees import diff_trees

FILES = 600  # the scan notices a cancel every 256 entries
SIZE = 2000  # one chunk per file


def _share(src: Path) -> dict[str, bytes]:
    contents = {}
    for f in range(FILES):
        data = os.urandom(SIZE)
        (src / f"d{f % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{f % 4}" / f"f{f}").write_bytes(data)
        contents[f"d{f % 4}/f{f}"] = data
    return contents


def _checkpoint_after_some_files(
    repo: Repository, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first attempt cancelled part-way: it leaves a checkpoint of the share."""
    cancel = threading.Event()
    seen = {"n": 0}
    real_lstat = local.LocalDir.lstat

    def counting_lstat(self: local.LocalDir, name: bytes) -> os.stat_result:
        seen["n"] += 1
        if seen["n"] == 300:
            cancel.set()
        return real_lstat(self, name)

    monkeypatch.setattr(local.LocalDir, "lstat", counting_lstat)
    with pytest.raises(BackupCancelled):
        run_backup(LocalSource(src), repo, BackupOptions(share="s"), cancel=cancel)
    monkeypatch.setattr(local.LocalDir, "lstat", real_lstat)
    assert any(p.checkpoint for p in repo.list_restore_points(include_checkpoints=True))


@pytest.mark.parametrize("earlier_attempt", ["lingering lease", "checkpoint", "none"])
def test_resumed_backup_reuses_packs_its_earlier_attempt_never_indexed(
    repo: Repository,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    earlier_attempt: str,
) -> None:
    src = tmp_path / "src"
    contents = _share(src)
    if earlier_attempt == "checkpoint":
        _checkpoint_after_some_files(repo, src, monkeypatch)
    # the earlier attempt (the engine's writer name for share "s") stored every file's
    # chunk, and its packs landed; then it died before any index segment listed them
    segments = set(repo.backend.list(INDEX_PREFIX))
    dead = repo.open_writer("backup:s:", pack_size=100_000)
    for data in contents.values():
        dead.add_blob(KIND_DATA, repo.blob_id(data), data, force=True)
    dead.flush()
    for name in set(repo.backend.list(INDEX_PREFIX)) - segments:
        repo.backend.delete(name)
    if earlier_attempt == "lingering lease":
        dead._lease._stop.set()  # killed: its lease stays until it expires
    else:
        dead.close()
    packs = set(repo.backend.list("data/"))

    # the next attempt, on another proxy (its own cache)
    with Repository.open(
        open_backend(str(tmp_path / "repo")), PASSPHRASE, cache_dir=tmp_path / "next"
    ) as nxt:
        result = run_backup(LocalSource(src), nxt, BackupOptions(share="s"))
        new_packs = set(repo.backend.list("data/")) - packs
        if earlier_attempt == "none":
            # no sign of an earlier attempt: the packs are not listed (a cost every task
            # would pay) and the data is sent again
            assert new_packs
            assert result.stats.bytes_transferred >= FILES * SIZE
            assert result.stats.bytes_adopted == 0
        else:
            # every chunk is found in the earlier attempt's packs: no data sent again
            assert new_packs == set()
            assert result.stats.bytes_transferred < FILES * SIZE // 4  # trees only
            assert result.stats.bytes_adopted >= FILES * SIZE
        assert result.restore_point is not None
        run_restore(nxt, result.restore_point, tmp_path / "out")
        assert diff_trees(src, tmp_path / "out") == []
        report = nxt.check()
        assert report.ok, report.errors
        assert not any("not indexed" in w for w in report.warnings), report.warnings
    dead.close(flush=False)
