"""Execute one task through the engine and turn the outcome into a `TaskResult`.

Runs in a worker thread of the proxy (one per busy slot). Errors become failed
results with a message fit for a user; a cancel request returns `stopped`
after the engine saved its checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferryman.proxy import browsing, path_names, share_access
from ferryman.proxy.maintenance import run_maintenance_task, stored_bytes
from ferryman.proxy.protocol import FinalState, TaskAssignment, TaskResult
from ferryman.proxy.repository_access import open_repository

log = logging.getLogger("ferryman.proxy.task")

ProgressSink = Callable[[dict[str, Any]], None]


class TaskError(Exception):
    """A task failed for a reason fit for a user; `unreachable` names what it could not reach."""

    def __init__(self, message: str, unreachable: str | None = None) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def progress_adapter(sink: ProgressSink) -> Callable[[Any], None]:
    def on_event(event: Any) -> None:
        data = _plain(event)
        if isinstance(data, dict):
            data.setdefault("rate", data.get("read_rate", 0.0))
            sink(data)

    return on_event


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def _stats(stats: Any, duration: float | None = None) -> dict[str, Any]:
    data = _plain(stats) if stats is not None else {}
    data.setdefault("files", data.get("files_scanned", data.get("files_restored", 0)))
    data.setdefault("bytes", data.get("bytes_scanned", data.get("bytes_restored", 0)))
    data.setdefault("duration", data.get("seconds_total", duration or 0.0))
    return data


def _caused_by_source_lost(exc: BaseException) -> bool:
    """Whether ``exc`` comes (through its causes) from a source lost for good mid-task."""
    from ferryman.sources.base import SourceLost

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SourceLost):
            return True
        seen = seen.__cause__
    return False


def run_backup_task(
    a: TaskAssignment,
    repo: Any,
    progress: ProgressSink,
    cancel: threading.Event,
    state_dir: Path | None = None,
) -> TaskResult:
    from ferryman.engine.backup import BackupFailed, run_backup
    from ferryman.engine.io_governor import GovernorSettings
    from ferryman.engine.options import BackupOptions
    from ferryman.sources.base import SourceError

    assert a.share is not None
    try:
        source = share_access.open_source(a.share, a.task_id, state_dir or Path("."), cancel)
    except share_access.ShareUnavailable as exc:
        raise TaskError(str(exc), "share") from exc
    paths: list[bytes] = []
    partition_name = ""
    if a.partition:
        partition_name = f"{a.partition['index']}/{a.partition['count']}"
        names = list(a.partition.get("paths", []))
        if "rest_except" in a.partition:
            others = set(a.partition["rest_except"])
            try:
                top = share_access.top_level_names(source)
            except SourceError as exc:
                raise TaskError(f"share '{a.share.name}': {exc}", "share") from exc
            names = sorted(set(names) | {n for n in top if n not in others})
        paths = [os.fsencode(n) for n in names]
        if not paths:
            return TaskResult(task_id=a.task_id, state="success", output={"partial": None})
    options = BackupOptions(
        share=a.share.name,
        paths=paths,
        partition=partition_name,
        include=a.share.include,
        exclude=a.share.exclude,
        save_restore_point=not a.partition,
        checkpoint_interval=float(a.params.get("checkpoint_interval", 30.0)),
        tags={"job": str(a.params.get("job") or ""), "session": str(a.session_id)},
        adaptive_io=GovernorSettings() if a.share.io_control == "adaptive" else None,
    )
    options.workers = share_access.reader_threads(source, options.workers)
    try:
        result = run_backup(source, repo, options, progress_adapter(progress), cancel)
    except BackupFailed as exc:
        # the share went away mid-task: requeued (maybe elsewhere), checkpoints resume it;
        # unless the task was stopped meanwhile (it ends "stopped", not retried)
        if _caused_by_source_lost(exc) and not cancel.is_set():
            raise TaskError(str(exc), "share") from exc
        raise
    stats = _stats(result.stats)
    stats["bottleneck"] = result.bottleneck
    if result.io_adaptive is not None:
        stats["io_adaptive"] = result.io_adaptive
    warnings = [{"path": w.path, "reason": w.reason} for w in result.warnings]
    snapshot, snapshot_warnings = share_access.snapshot_report(source)
    if snapshot is not None:
        stats["snapshot"] = snapshot
        warnings += snapshot_warnings
    output: dict[str, Any] = {}
    if a.partition:
        output["partial"] = {
            "paths": [p.hex() for p in result.paths],
            "partition": result.partition,
            "root_tree": result.root_tree.hex(),
            "parent": result.parent,
            "status": result.status,
            "stats": result.stats.as_dict(),
            "warnings": len(result.warnings) + result.warnings_dropped,
        }
    else:
        # the repository's size as this task leaves it, for the console's usage figures
        stats["repository_bytes"] = stored_bytes(repo)
        point = repo.load_restore_point(result.restore_point)
        output.update(
            point_id=result.restore_point,
            time=_iso(point.time),
            files=stats.get("files_scanned", 0),
            bytes=stats.get("bytes_scanned", 0),
        )
        floor = a.params.get("plan_stats_above") or {}
        if stats.get("files_scanned", 0) >= floor.get("files", 1 << 62) or stats.get(
            "bytes_scanned", 0
        ) >= floor.get("bytes", 1 << 62):
            output["share_stats"] = browsing.top_level_stats(repo, result.root_tree)
    state: FinalState = "warning" if result.status == "warning" else "success"
    return TaskResult(task_id=a.task_id, state=state, stats=stats, warnings=warnings, output=output)


def _partial_result(share: str, data: dict[str, Any]) -> Any:
    from ferryman.engine.options import BackupResult
    from ferryman.engine.stats import BackupStats

    known = set(BackupStats.__dataclass_fields__)
    stats = BackupStats(**{k: v for k, v in data["stats"].items() if k in known})
    return BackupResult(
        status=data["status"],
        share=share,
        partition=data["partition"],
        paths=[bytes.fromhex(p) for p in data["paths"]],
        root_tree=bytes.fromhex(data["root_tree"]),
        restore_point=None,
        parent=data.get("parent"),
        stats=stats,
        warnings=[],
        warnings_dropped=int(data.get("warnings", 0)),
    )


def run_assemble_task(a: TaskAssignment, repo: Any) -> TaskResult:
    from ferryman.engine.assemble import assemble_restore_point

    assert a.share is not None
    partials = [p for p in a.params.get("results", []) if p]
    results = [_partial_result(a.share.name, p) for p in partials]
    meta = {"job": str(a.params.get("job") or ""), "session": str(a.session_id)}
    point_id = assemble_restore_point(repo, a.share.name, results, meta)
    point = repo.load_restore_point(point_id)
    files = sum(r.stats.files_scanned for r in results)
    size = sum(r.stats.bytes_scanned for r in results)
    output: dict[str, Any] = {
        "point_id": point_id,
        "time": _iso(point.time),
        "files": files,
        "bytes": size,
        # a partitioned share is large by definition: refresh the plan for its next run
        "share_stats": browsing.top_level_stats(repo, point.root),
    }
    state: FinalState = "warning" if any(r.status == "warning" for r in results) else "success"
    stats = {"repository_bytes": stored_bytes(repo)}
    return TaskResult(task_id=a.task_id, state=state, stats=stats, output=output)


def run_restore_task(
    a: TaskAssignment, repo: Any, progress: ProgressSink, cancel: threading.Event
) -> TaskResult:
    from ferryman.engine.options import RestoreOptions
    from ferryman.engine.restore import run_restore
    from ferryman.sources.local import LocalRestoreTarget

    p = a.params
    if p.get("paths_b64") is not None:  # exact bytes of each path, from the server
        raw_paths = [path_names.from_b64(x) for x in p["paths_b64"]]
    else:
        raw_paths = [path_names.parse(x) for x in p.get("paths", [])]
    raw_paths = [x.strip(b"/") for x in raw_paths if x.strip(b"/")]
    if a.partition:
        # one slice of a whole-share restore: a set of top-level entries
        paths = list(a.partition.get("paths", []))
        if "rest_except" in a.partition:
            others = set(a.partition["rest_except"])
            names = {
                os.fsdecode(path_names.from_b64(e["name_b64"]))
                for e in browsing.list_path(repo, p["point_id"], b"/")
            }
            paths = sorted(set(paths) | {n for n in names if n not in others})
        if not paths:
            return TaskResult(task_id=a.task_id, state="success")
        raw_paths = [os.fsencode(x) for x in paths]
    options = RestoreOptions(
        paths=raw_paths,
        overwrite=p.get("overwrite", "replace"),
    )
    if share_access.is_s3(str(p["target"])):
        try:
            result = share_access.restore_into_bucket(
                repo,
                p["point_id"],
                str(p["target"]),
                options.paths,
                a.share,
                cancel,
                overwrite=options.overwrite,
            )
        except share_access.ShareUnavailable as exc:
            raise TaskError(str(exc), "share") from exc
    elif str(p["target"]).startswith("smb://"):
        result = _restore_to_smb(a, repo, options, progress, cancel)
    else:
        result = run_restore(
            repo,
            p["point_id"],
            LocalRestoreTarget(p["target"]),
            options,
            progress_adapter(progress),
            cancel,
        )
    errors = [{"path": e.path, "reason": e.reason} for e in result.errors]
    state: FinalState = "stopped" if cancel.is_set() else result.status
    error = f"{len(errors)} path(s) could not be restored" if state == "failed" else None
    return TaskResult(
        task_id=a.task_id, state=state, stats=_stats(result.stats), warnings=errors, error=error
    )


def _restore_to_smb(
    a: TaskAssignment, repo: Any, options: Any, progress: ProgressSink, cancel: threading.Event
) -> Any:
    """Restore into an SMB share, logged in with the restore point's share password."""
    from ferryman.engine.restore import run_restore
    from ferryman.proxy.smb_access import SmbShareError, smb_restore_target

    p = a.params
    try:
        target = smb_restore_target(str(p["target"]), a.share, cancel)
    except SmbShareError as exc:
        raise TaskError(str(exc)) from exc
    try:
        return run_restore(repo, p["point_id"], target, options, progress_adapter(progress), cancel)
    finally:
        target.close()


def run_check_task(a: TaskAssignment, repo: Any) -> TaskResult:
    report = repo.check(read_data=bool(a.params.get("read_data")))
    data = _plain(report)
    if not isinstance(data, dict):
        data = {"report": str(report)}
    problems = data.get("errors") or data.get("problems") or []
    ok = data.get("ok", not problems)
    state: FinalState = "success" if ok else "failed"
    error = None if ok else f"repository check found {len(problems)} problem(s)"
    warnings = [{"path": str(x), "reason": "check"} for x in problems][:1000]
    return TaskResult(task_id=a.task_id, state=state, stats=data, warnings=warnings, error=error)


def run_browse_task(a: TaskAssignment, repo: Any) -> TaskResult:
    p = a.params
    # the server sends the exact bytes in base64; "path" (maybe \xNN-escaped) otherwise
    raw = (
        path_names.from_b64(p["path_b64"])
        if p.get("path_b64") is not None
        else path_names.parse(p.get("path", "/"))
    )
    try:
        if p.get("op") == "versions":
            output: dict[str, Any] = {
                "versions": browsing.versions(repo, p["share"], p["point_ids"], raw)
            }
        else:
            output = {"entries": browsing.list_path(repo, p["point_ids"][0], raw)}
    except browsing.PathNotFound as exc:
        return TaskResult(
            task_id=a.task_id, state="failed", error=str(exc), output={"not_found": True}
        )
    return TaskResult(task_id=a.task_id, state="success", output=output)


def execute(
    a: TaskAssignment, cache_dir: Path, progress: ProgressSink, cancel: threading.Event
) -> TaskResult:
    """Run one task; never raises."""
    from ferryman.repository import BackendError, RepositoryError

    try:
        if a.repository is None:
            raise TaskError("the task names no repository")
        try:
            repo = open_repository(a.repository, cache_dir, create=a.kind == "attach")
        except (BackendError, OSError) as exc:
            # this proxy cannot reach the storage: another proxy may
            raise TaskError(f"repository '{a.repository.name}': {exc}", "repository") from exc
        except (RepositoryError, ValueError) as exc:  # wrong passphrase, not a repository...
            raise TaskError(f"repository '{a.repository.name}': {exc}") from exc
        try:
            if a.kind == "attach":
                return TaskResult(
                    task_id=a.task_id, state="success", output={"repository_id": repo.id}
                )
            if a.kind == "backup":
                return run_backup_task(a, repo, progress, cancel, cache_dir)
            if a.kind == "assemble":
                return run_assemble_task(a, repo)
            if a.kind == "restore":
                return run_restore_task(a, repo, progress, cancel)
            if a.kind == "check":
                return run_check_task(a, repo)
            if a.kind == "browse":
                return run_browse_task(a, repo)
            if a.kind == "maintenance":
                return run_maintenance_task(a, repo)
            raise TaskError(f"this proxy does not know task kind '{a.kind}'")
        finally:
            repo.close()
    except TaskError as exc:
        output = {"unreachable": exc.unreachable} if exc.unreachable else {}
        return TaskResult(task_id=a.task_id, state="failed", error=str(exc), output=output)
    except Exception as exc:
        from ferryman.engine.options import EngineError

        if cancel.is_set():
            return TaskResult(task_id=a.task_id, state="stopped", error="cancelled")
        from ferryman.sources.base import SourceError

        if isinstance(exc, EngineError | RepositoryError | SourceError) or (
            type(exc).__name__ == "RestoreFailed"
        ):
            return TaskResult(task_id=a.task_id, state="failed", error=str(exc))
        log.exception("task %d (%s) failed", a.task_id, a.kind)
        return TaskResult(task_id=a.task_id, state="failed", error=f"{type(exc).__name__}: {exc}")
