"""The backup server: configuration database, REST API, dispatcher, sessions, CA.

Entry points used by the CLI: `home`, `init_server`, `run_server`.
"""

from __future__ import annotations

from ferryman.server.home import home
from ferryman.server.init import InitError, InitResult, init_server
from ferryman.server.server_run import run_server

__all__ = ["InitError", "InitResult", "home", "init_server", "run_server"]
