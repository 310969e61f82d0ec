"""`ferryman server run`: API + dispatcher + embedded proxy in one process, clean shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import select

from ferryman.engine.process_pool import use_runtime_directory
from ferryman.server.api.app import create_app
from ferryman.server.config import validate_listen
from ferryman.server.context import ServerContext
from ferryman.server.db.models import Proxy
from ferryman.server.dispatcher import Dispatcher
from ferryman.server.gateway import ProxyGateway
from ferryman.server.history import HistoryPruner
from ferryman.server.home import home as resolve_home
from ferryman.server.notifications import Notifier
from ferryman.server.recovery import interrupt_embedded_tasks, recover_sessions
from ferryman.server.scheduler import Scheduler
from ferryman.server.tls import server_ssl_options

log = logging.getLogger("ferryman.server")


class AddressInUse(Exception):
    """The listen address is taken by another program."""


def ensure_address_free(host: str, port: int) -> None:
    """Fail with one clear line before starting anything when HOST:PORT is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return  # uvicorn reports an unknown host itself
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise AddressInUse(
                f"port {host}:{port} is in use by another program ({exc.strerror}); "
                "stop it or choose another address with --listen HOST:PORT"
            ) from exc


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `run_server` owns SIGTERM/SIGINT."""

    @contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


def _setup_logging() -> None:
    if logging.getLogger().handlers:
        return
    logging.basicConfig(
        level=os.environ.get("FERRYMAN_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _update_client_config(ctx: ServerContext) -> None:
    path = ctx.home.client_config
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if data.get("server") != ctx.config.url:
        data["server"] = ctx.config.url
        path.write_text(json.dumps(data, indent=2) + "\n")


class RunningServer:
    """A started server (used by `run_server`, and by tests that want it in-process)."""

    def __init__(
        self,
        root: Path,
        listen: str | None = None,
        embedded_proxy: bool = True,
        catch_up: bool | None = None,
    ) -> None:
        _setup_logging()
        self.ctx = ServerContext.open(root)
        self.scheduler = Scheduler(self.ctx, catch_up)  # refuses a bad time zone setting first
        self.history = HistoryPruner(self.ctx)
        if listen:
            self.ctx.config.listen = validate_listen(listen)
        _update_client_config(self.ctx)
        self.ctx.db.migrate()
        self.gateway = ProxyGateway(self.ctx)
        self.ctx.gateway = self.gateway  # type: ignore[attr-defined]
        self.dispatcher = Dispatcher(self.ctx)
        self.notifier = Notifier(self.ctx)
        self.embedded_enabled = embedded_proxy
        self.embedded: Any = None
        home = self.ctx.home
        config = uvicorn.Config(
            create_app(self.ctx),
            host=self.ctx.config.host,
            port=self.ctx.config.port,
            log_level="warning",
            log_config=None,  # uvicorn's lines go through our handler (text or JSON)
            access_log=False,
            timeout_graceful_shutdown=3,
            **server_ssl_options(str(home.tls_cert), str(home.tls_key), str(home.ca_cert)),
        )
        self.server = _Server(config)

    def start_background_services(self) -> None:
        with self.ctx.db.session() as db:
            recover_sessions(db, self.ctx.config.lease_seconds)
        self.dispatcher.start()
        self.notifier.start()
        if self.embedded_enabled:
            self._start_embedded()
        self.scheduler.start()
        self.history.start()
        self.ctx.signals.dispatch.set()

    def _start_embedded(self) -> None:
        from ferryman.proxy.capacity import default_slots
        from ferryman.proxy.embedded import start_embedded_proxy

        with self.ctx.db.session() as db:
            proxy = db.scalar(select(Proxy).where(Proxy.embedded.is_(True)))
            if proxy is None:
                log.warning("no embedded proxy registered in this installation")
                return
            proxy_id, site = proxy.id, proxy.site
        slots = self.ctx.config.embedded_slots or default_slots()
        self.embedded = start_embedded_proxy(
            self.gateway,
            proxy_id,
            self.ctx.home.embedded_proxy,
            slots,
            site=site,
            poll_timeout=self.ctx.config.poll_timeout,
        )

    def request_stop(self) -> None:
        self.ctx.shutting_down.set()
        self.server.should_exit = True
        self.ctx.signals.wake_all_proxies()
        self.ctx.signals.session_changed()

    def shutdown(self) -> None:
        self.ctx.shutting_down.set()
        self.scheduler.stop()
        self.history.stop()
        if self.embedded is not None:
            self.embedded.stop(timeout=30)
        self.dispatcher.stop()
        self.notifier.stop()
        try:
            with self.ctx.db.session() as db:
                interrupt_embedded_tasks(db)
        except Exception:
            log.exception("could not requeue the embedded proxy's tasks")
        self.ctx.db.dispose()
        log.info("server stopped")

    def serve(self) -> None:
        """Blocking: serve until `request_stop`, then shut everything down."""
        ensure_address_free(self.ctx.config.host, self.ctx.config.port)
        self.start_background_services()
        log.info("ferryman server listening on %s", self.ctx.config.url)
        try:
            self.server.run()
        finally:
            self.shutdown()


def run_server(
    home: str | os.PathLike[str] | None = None,
    listen: str | None = None,
    embedded_proxy: bool = True,
    catch_up: bool | None = None,
) -> None:
    """Run the backup server until SIGTERM/SIGINT (blocking). ``catch_up`` overrides the
    server setting: run jobs that missed scheduled runs while the server was down."""
    use_runtime_directory()  # the embedded proxy's restore workers: sockets out of /tmp
    running = RunningServer(resolve_home(home), listen, embedded_proxy, catch_up)

    def on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        running.request_stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    running.serve()
