"""Ratios against the peers and pass/miss against the QUALITY.md targets."""

from __future__ import annotations

from bench.measure import StepResult, pick_round
from bench.report import session_seconds
from bench.targets import DAILY, FIRST, RESTORE, UNCHANGED, compare, ferryman_memory_check

MB = 1_000_000


def _result(tool: str, step: str, seconds: float, repo: int = 100 * MB, rss: int = 0) -> StepResult:
    return StepResult(tool, step, seconds, 1000 * MB, rss, repo, repo)


def _run(
    tool: str, first: float, rerun: float, daily: float, restore: float, repo: int
) -> list[StepResult]:
    return [
        _result(tool, FIRST, first, repo),
        _result(tool, UNCHANGED, rerun, repo),
        _result(tool, DAILY, daily, repo),
        _result(tool, RESTORE, restore, repo),
    ]


def test_ratios_read_as_the_targets_do() -> None:
    results = _run("ferryman", 10, 2, 3, 5, 90 * MB) + _run("restic", 30, 10, 9, 20, 100 * MB)
    by_measure = {c.measure: c for c in compare(results, ["restic"])}
    first = by_measure["first backup throughput"]
    assert first.ratio == 3.0 and first.passed  # 3x restic's MB/s
    rerun = by_measure["unchanged re-run time"]
    assert rerun.ratio == 0.2 and rerun.passed  # a fifth of restic's time
    daily = by_measure["daily-change run time"]
    assert (
        daily.ratio is not None and abs(daily.ratio - 1 / 3) < 1e-9 and not daily.passed
    )  # 0.333 > 0.33
    restore = by_measure["full restore throughput"]
    assert restore.ratio == 4.0 and restore.passed
    size = by_measure["repository size (3 backups)"]
    assert size.ratio == 0.9 and size.passed


def test_bounds_apply_to_restic_only_and_failures_give_no_ratio() -> None:
    results = _run("ferryman", 10, 2, 3, 5, MB) + _run("borg", 30, 10, 9, 20, MB)
    results[-1].ok = False  # borg's restore failed
    comparisons = compare(results, ["borg"])
    assert all(c.target is None and c.passed is None for c in comparisons)
    restore = next(c for c in comparisons if c.measure == "full restore throughput")
    assert restore.ratio is None


def test_memory_check_counts_the_server_and_its_workers_not_the_cli() -> None:
    backup = _result("ferryman", FIRST, 1, rss=450 * MB)
    backup.peak_breakdown = [
        (1, "ferryman server run", 200 * MB),
        (2, "ferryman job run", 150 * MB),
        (3, "python -B -c from multiprocessing.spawn import spawn_main", 60 * MB),
        (4, "python -B -c from multiprocessing.resource_tracker import main", 40 * MB),
    ]
    check = ferryman_memory_check([backup])
    assert check is not None and check.ratio == 300 and check.passed  # 200 + 60 + 40
    assert "server" in check.measure
    backup.peak_breakdown[2] = (3, "python -B -c from multiprocessing.spawn import", 61 * MB)
    backup.peak_rss_bytes += 1 * MB
    check = ferryman_memory_check([backup])
    assert check is not None and check.ratio == 301 and not check.passed


def test_memory_check_counts_a_standalone_proxy_and_says_so() -> None:
    backup = _result("ferryman", FIRST, 1, rss=400 * MB)
    backup.peak_breakdown = [
        (1, "ferryman server run --no-embedded-proxy", 90 * MB),
        (2, "ferryman proxy run --server https://127.0.0.1:1 --name bench", 150 * MB),
        (3, "ferryman job run", 60 * MB),
        (4, "python -B -c from multiprocessing.spawn import spawn_main", 100 * MB),
    ]
    check = ferryman_memory_check([backup])
    assert check is not None and check.ratio == 340 and not check.passed  # 90 + 150 + 100
    assert "standalone proxy" in check.measure


def test_session_seconds_from_the_follow_summary() -> None:
    line = "session 4 restore (job bench) ended SUCCESS in 1m02s: 9,988 files"
    assert session_seconds(line) == ("SUCCESS", 62.0)
    assert session_seconds("ended WARNING in 7.7s") == ("WARNING", 7.7)
    assert session_seconds("no summary") is None


def test_repetitions_report_the_chosen_run_and_keep_all() -> None:
    runs = [_result("restic", RESTORE, t) for t in (15.0, 60.0, 17.0)]
    runs[0].note = "verified"
    best = pick_round(runs, "best")
    median = pick_round(runs, "median")
    assert best.seconds == 15.0 and median.seconds == 17.0
    assert best.repeats == [15.0, 60.0, 17.0] and len(best.rounds) == 3
    assert median.note == "verified"  # the check of the first restore stays with the step
    assert StepResult.from_json(best.to_json()).rounds == best.rounds
    runs.append(_result("restic", RESTORE, 1.0))
    runs[-1].ok = False
    assert not pick_round(runs, "best").ok  # a failed repetition is not hidden
