"""Connectivity of proxies to shares and repositories: probes to ask for, results to keep."""

from __future__ import annotations

import json
import time

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as DbSession

from ferryman.proxy.protocol import ProbeRequest, ProbeResult
from ferryman.server.db.models import Probe, Repository, Share, utcnow
from ferryman.server.secrets import SecretBox

FAILED_PROBE_RETRY = 30.0  # seconds before a failed probe is asked again
ASK_AGAIN_AFTER = 10.0  # do not repeat an unanswered request sooner than this


class ProbeTracker:
    """Remembers which probes were recently requested, per proxy (process memory only)."""

    def __init__(self) -> None:
        self._asked: dict[tuple[int, str, int], float] = {}

    def due(self, proxy_id: int, kind: str, target_id: int) -> bool:
        asked = self._asked.get((proxy_id, kind, target_id))
        return asked is None or time.monotonic() - asked > ASK_AGAIN_AFTER

    def mark(self, proxy_id: int, kind: str, target_id: int) -> None:
        self._asked[(proxy_id, kind, target_id)] = time.monotonic()

    def forget(self, proxy_id: int, kind: str, target_id: int) -> None:
        self._asked.pop((proxy_id, kind, target_id), None)


def repository_credentials(repo: Repository, secrets: SecretBox) -> dict[str, str] | None:
    if not repo.access_key_secret or not repo.secret_key_secret:
        return None
    return {
        "access_key": secrets.decrypt(repo.access_key_secret, f"repository:{repo.id}:access_key"),
        "secret_key": secrets.decrypt(repo.secret_key_secret, f"repository:{repo.id}:secret_key"),
    }


def share_credentials(share: Share, secrets: SecretBox) -> dict[str, str] | None:
    """A share's decrypted credentials (an SMB password), None when it has none."""
    if not share.credentials_secret:
        return None
    value = json.loads(secrets.decrypt(share.credentials_secret, f"share:{share.id}:credentials"))
    return {str(k): str(v) for k, v in value.items()}


def needed_probes(
    db: DbSession, proxy_id: int, secrets: SecretBox, tracker: ProbeTracker, max_age: float
) -> list[ProbeRequest]:
    now = utcnow()
    existing = {
        (p.kind, p.target_id): p
        for p in db.scalars(select(Probe).where(Probe.proxy_id == proxy_id))
    }
    wanted: list[ProbeRequest] = []
    shares = list(db.scalars(select(Share)))
    unscanned = {s.id for s in shares if not s.last_stats}
    targets: list[tuple[str, int, str, Repository | Share]] = [
        ("share", s.id, s.url, s) for s in shares
    ]
    targets += [("repository", r.id, r.url, r) for r in db.scalars(select(Repository))]
    for kind, target_id, url, row in targets:
        probe = existing.get((kind, target_id))
        if probe is not None and probe.target_url == url:
            age = (now - probe.checked).total_seconds()
            if age < (max_age if probe.ok else min(max_age, FAILED_PROBE_RETRY)):
                continue
        if not tracker.due(proxy_id, kind, target_id):
            continue
        tracker.mark(proxy_id, kind, target_id)
        credentials = (
            repository_credentials(row, secrets)
            if isinstance(row, Repository)
            else share_credentials(row, secrets)
        )
        wanted.append(
            ProbeRequest(
                kind=kind,  # type: ignore[arg-type]
                target_id=target_id,
                url=url,
                credentials=credentials,
                scan=kind == "share" and target_id in unscanned,
            )
        )
    return wanted


def store_probe_results(
    db: DbSession, proxy_id: int, results: list[ProbeResult], tracker: ProbeTracker
) -> None:
    for result in results:
        db.execute(
            delete(Probe).where(
                Probe.proxy_id == proxy_id,
                Probe.kind == result.kind,
                Probe.target_id == result.target_id,
            )
        )
        db.add(
            Probe(
                proxy_id=proxy_id,
                kind=result.kind,
                target_id=result.target_id,
                target_url=result.url,
                ok=result.ok,
                rtt_ms=result.rtt_ms,
                throughput=result.throughput,
                error=(result.error or "")[:500] or None,
                checked=utcnow(),
            )
        )
        tracker.forget(proxy_id, result.kind, result.target_id)
        if result.kind == "share" and result.ok and result.scan:
            share = db.get(Share, result.target_id)
            if share is not None and not share.last_stats and share.url == result.url:
                # a quick top-level scan sizes the first run's partitions
                share.last_stats = {**result.scan, "source": "scan"}


def invalidate(db: DbSession, proxy_id: int, kind: str, target_id: int) -> None:
    """Force a re-probe (after a task failed to reach the target)."""
    db.execute(
        delete(Probe).where(
            Probe.proxy_id == proxy_id, Probe.kind == kind, Probe.target_id == target_id
        )
    )
