"""One tool's run: its own copy of the share, its repository, the four steps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import Console

from bench.daily_change import apply_daily_change
from bench.measure import StepResult, delete_tree, measure_step, pick_round, settle_after_deletion
from bench.targets import DAILY, FIRST, RESTORE, UNCHANGED
from bench.tools.base import BackupTool
from bench.tree_compare import compare_trees
from bench.workload import TreeStats, Workload, copy_share


def _restored_root(target: Path, source: Path) -> Path:
    """Where the share's contents landed (some tools keep the absolute source path)."""
    nested = target / str(source).lstrip("/")
    return nested if nested.is_dir() else target


class ToolRun:
    """Drives one tool through the steps; a failed step ends its run."""

    def __init__(
        self,
        tool: BackupTool,
        workload: Workload,
        workdir: Path,
        console: Console,
        others: Callable[[], Iterable[int]] = tuple,
        estimator: str = "best",
    ) -> None:
        """``others``: the background processes of the other tools, not measured here."""
        self.tool = tool
        self._others = others
        self.estimator = estimator
        self.base = workdir / getattr(tool, "slug", tool.name)
        self.marks = workdir.parent  # where the time of the last large deletion is kept
        self.source = self.base / "share"
        self.restore_to = self.base / "restored-1"
        self.workload = workload
        self.console = console
        self.results: list[StepResult] = []
        self._rounds: dict[str, list[StepResult]] = {}  # every run of each step
        self.info: dict[str, object] = {"description": tool.describe()}
        self.alive = False
        self._bytes = 0

    def prepare(self) -> bool:
        """Copy the share and set the tool up (not measured); False if setup failed."""
        delete_tree(self.base, self.marks)
        copy_share(self.workload, self.source)
        self.console.print(f"[bold]{self.tool.name}[/bold]: {self.info['description']}")
        try:
            self.tool.setup(self.base, self.source)
        except Exception as exc:
            self.info["setup_error"] = f"{type(exc).__name__}: {exc}"
            self.console.print(f"  setup failed: {self.info['setup_error']}", markup=False)
            self.tool.teardown()
            failed = StepResult(self.tool.name, FIRST, 0.0, 0, 0, 0, 0, ok=False)
            failed.error = f"setup: {self.info['setup_error']}"
            self.results = [failed]
            return False
        self._bytes = TreeStats.of(self.source).bytes
        self.alive = True
        return True

    def _step(self, name: str, restore: bool = False, again: bool = False) -> None:
        if restore:
            # every restore into a new empty folder; the earlier ones are deleted at the
            # end, and a restore starts only once the last large deletion is minutes old
            # (bench.measure.DELETE_SETTLE_SECONDS: on this disk creating files soon after
            # deleting many is several times slower, which would bias whoever comes next)
            runs = len(self._rounds.get(name, []))
            self.restore_to = self.base / f"restored-{runs + 1}"
            waited = settle_after_deletion(self.marks, say=self._say)
            if waited:
                self.info["restore_waited_s"] = round(waited)
        os.sync()  # no writeback of the previous step inside this one
        action = (lambda: self.tool.restore(self.restore_to)) if restore else self.tool.backup
        result = measure_step(
            self.tool.name,
            name,
            action,
            source_bytes=self._bytes,
            repository=self.tool.repository,
            exclude=self._others,
        )
        result.detail = str(getattr(self.tool, "last_detail", ""))
        shown = f"{result.seconds:.1f} s" if result.ok else f"FAILED {result.error[:300]}"
        self.console.print(
            f"  {self.tool.name:9} {name}{' (again)' if again else ''}: {shown}", markup=False
        )
        rounds = self._rounds.setdefault(name, [])
        rounds.append(result)
        self.alive = result.ok
        reported = pick_round(rounds, self.estimator)
        if again:
            self.results[-1] = reported
        else:
            self.results.append(reported)

    def run_step(self, step: str, again: bool = False) -> None:
        """Run ``step`` (one of ``bench.targets.STEPS``) if the run is still alive.

        ``again``: a repetition of the step just run (re-runs and restores only);
        the run picked by the estimator is reported, every run is kept.
        """
        if not self.alive:
            return
        if again:
            self._step(step, restore=step == RESTORE, again=True)
        elif step in (FIRST, UNCHANGED):
            self._step(step)
        elif step == DAILY:
            self.info["daily_change"] = apply_daily_change(self.source).summary()
            self._bytes = TreeStats.of(self.source).bytes
            self._step(step)
        elif step == RESTORE:
            self._step(step, restore=True)
            if self.alive:
                self._verify(self.results[-1])

    def _verify(self, result: StepResult) -> None:
        first = self.base / "restored-1"
        diff = compare_trees(self.source, _restored_root(first, self.source))
        self.info["restore_check"] = diff.summary()
        result.note = "verified" if diff.identical else "restore DIFFERS"
        self._rounds[RESTORE][0].note = result.note  # kept when a repetition is reported
        self.console.print(f"  {self.tool.name:9} restore check: {diff.summary()}", markup=False)

    def _say(self, text: str) -> None:
        self.console.print(f"  {text}", markup=False)

    def finish(self, keep: bool) -> None:
        self.tool.teardown()
        if not keep:
            delete_tree(self.source, self.marks)
            for restored in self.base.glob("restored-*"):
                delete_tree(restored, self.marks)
