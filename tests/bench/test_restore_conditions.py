"""The harness's restore conditions: deletions are recorded and a restore waits for them."""

from __future__ import annotations

import time
from pathlib import Path

from bench.measure import delete_tree, settle_after_deletion


def test_a_deletion_is_recorded_and_waited_for(tmp_path: Path) -> None:
    marks = tmp_path / "work"
    tree = tmp_path / "restored-1"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file").write_bytes(b"x")
    assert settle_after_deletion(marks, settle=3600) == 0  # nothing deleted yet: no wait
    delete_tree(tree, marks)
    assert not tree.exists()
    said: list[str] = []
    waited = settle_after_deletion(marks, settle=0.2, say=said.append)
    assert 0 < waited <= 0.2
    assert said and "large deletion" in said[0]
    assert settle_after_deletion(marks, settle=0.2) == 0  # now old enough


def test_an_old_deletion_and_a_missing_tree_cost_no_wait(tmp_path: Path) -> None:
    marks = tmp_path / "work"
    delete_tree(tmp_path / "absent", marks)  # nothing to delete: nothing recorded
    assert not marks.exists()
    marks.mkdir()
    (marks / ".last-large-delete").write_text(f"{time.time() - 400:.0f}\n")
    assert settle_after_deletion(marks) == 0  # default settle (360 s) already passed
