"""Everything a running server shares between the API, the dispatcher and the embedded proxy."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ferryman.server.ca import CertificateAuthority
from ferryman.server.config import ServerConfig
from ferryman.server.db.engine import Database
from ferryman.server.home import ServerHome
from ferryman.server.secrets import SecretBox


class Signals:
    """Wake-ups between threads of one server process (the database stays the source of truth)."""

    def __init__(self) -> None:
        self.dispatch = threading.Event()
        self._proxy_events: dict[int, threading.Event] = defaultdict(threading.Event)
        self._session_change = threading.Condition()
        self._session_generation = 0  # counts session_changed() calls

    def proxy_event(self, proxy_id: int) -> threading.Event:
        return self._proxy_events[proxy_id]

    def wake_proxy(self, proxy_id: int) -> None:
        self._proxy_events[proxy_id].set()

    def wake_all_proxies(self) -> None:
        for event in list(self._proxy_events.values()):
            event.set()

    def session_generation(self) -> int:
        """A token for :meth:`wait_session_change`: read it before looking at the database."""
        with self._session_change:
            return self._session_generation

    def session_changed(self) -> None:
        with self._session_change:
            self._session_generation += 1
            self._session_change.notify_all()

    def wait_session_change(self, timeout: float, since: int | None = None) -> None:
        """Wait up to ``timeout`` seconds for a session change.

        With ``since`` (a :meth:`session_generation` read before checking the database),
        a change signalled after that read returns at once instead of being missed: a
        follower sees a session end the moment it is committed, not a wait later.
        """
        with self._session_change:
            if since is None:
                self._session_change.wait(timeout)
            else:
                self._session_change.wait_for(lambda: self._session_generation != since, timeout)


@dataclass
class ServerContext:
    home: ServerHome
    config: ServerConfig
    db: Database
    secrets: SecretBox
    ca: CertificateAuthority
    signals: Signals = field(default_factory=Signals)
    shutting_down: threading.Event = field(default_factory=threading.Event)
    # `job run` and the scheduler check "not running" and start a session under this lock
    job_start_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, root: Path, db_url: str | None = None) -> ServerContext:
        home = ServerHome(root)
        config = ServerConfig.load(home.config)
        db = Database(db_url or config.db_url)
        return cls(
            home=home,
            config=config,
            db=db,
            secrets=SecretBox.load(home.secret_key),
            ca=CertificateAuthority.load(home.ca_cert, home.ca_key),
        )
