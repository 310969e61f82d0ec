"""A real backup server with its web console, and Debian's chromium driven by Playwright.

The server is started exactly as a user does (``ferryman server init`` + ``server run``
with the embedded proxy, in a temporary home on a free loopback port), one more proxy
joins with a join token, and the console's users are made with ``ferryman user add``.
The browser is ``/usr/bin/chromium`` (Debian's package); Playwright never downloads one.
Without chromium or the playwright package the tests skip locally and FAIL under CI.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli.installation import FERRYMAN, Installation, new_installation

CHROMIUM = "/usr/bin/chromium"
# as root chromium needs --no-sandbox; the others keep it off the (closed) network
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
WAIT_MS = 60_000  # the longest any wait-for-condition in these tests may take
PASSWORD = "correct horse battery staple"
USERS = {"alice": "administrator", "olga": "restore-operator", "victor": "viewer"}
# Chromium logs every 4xx answer as a console error; the console gets them on purpose
# (401 before sign-in, 409/422 of a bad form, a viewer's 403). Anything else counts.
_EXPECTED_NETWORK_LOG = re.compile(
    r"^Failed to load resource: the server responded with a status of 4\d\d"
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the web console end-to-end tests need it under CI: {reason}")
    pytest.skip(reason)


def need_playwright() -> Any:
    """Playwright's ``expect``, for a test module to import (skip/fail as above without it)."""
    try:
        from playwright.sync_api import expect
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip("the playwright package is not installed", allow_module_level=True)
    return expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, launched through Playwright.

    Per file, not per session: Playwright's sync API keeps an asyncio loop running in the
    main thread while it is open, and any later test of the same process (under
    pytest-xdist, any file the worker runs next) that calls ``asyncio.run`` would fail."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
        return
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
        return
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Console:
    """The running installation, its URL, users and the share the tests back up."""

    installation: Installation
    url: str
    source: Path
    shots: Path
    passwords: dict[str, str] = field(default_factory=dict)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with the administrator token of ``server init`` (test setup only)."""
        client = json.loads((self.installation.home / "client.json").read_text())
        with httpx.Client(
            base_url=self.url, verify=ssl.create_default_context(cafile=client["ca"]), timeout=120,
            headers={"Authorization": f"Bearer {client['token']}"},
        ) as http:  # fmt: skip
            return http.request(method, f"/api/v1{path}", **kwargs)

    def add_users(self, roles: dict[str, str], password: str) -> None:
        """``ferryman user add NAME --role R --password-stdin`` for each, run side by side."""
        running = {
            name: subprocess.Popen(
                [*FERRYMAN, "user", "add", name, "--role", role, "--password-stdin"],
                env=self.installation.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for name, role in roles.items()
        }
        for name, process in running.items():
            out, _ = process.communicate(password + "\n", timeout=60)
            assert process.returncode == 0, f"ferryman user add {name}: {out}"
            self.passwords[name] = password

    def shot(self, page: Any, view: str) -> None:
        """Save the screenshot of one view (1280x800) as ``<view>.png``."""
        page.screenshot(path=str(self.shots / f"{view}.png"))


def make_source(root: Path, big_mib: int) -> Path:
    """A small share: files at the top and in nested folders, text and binary."""
    (root / "projects" / "alpha" / "drafts").mkdir(parents=True)
    (root / "projects" / "beta").mkdir(parents=True)
    (root / "photos").mkdir()
    (root / "readme.txt").write_text("the web console backed this up\n")
    (root / "projects" / "alpha" / "plan.md").write_text("# alpha\n\n1. back up\n2. restore\n")
    (root / "projects" / "alpha" / "data.bin").write_bytes(os.urandom(200_000))
    (root / "projects" / "alpha" / "drafts" / "v1.txt").write_text("first draft\n" * 50)
    (root / "projects" / "beta" / "notes.txt").write_text("beta notes\n")
    with open(root / "photos" / "lake.raw", "wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(1 << 20))
    return root


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """Server + embedded proxy + one joined proxy, three users, a share folder to back up."""
    installation = new_installation(tmp_path_factory.mktemp("web-e2e"))
    wanted = os.environ.get("FERRYMAN_SCREENSHOTS")
    shots = Path(wanted).resolve() if wanted else tmp_path_factory.mktemp("screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        installation.start()
        installation.start_proxy("branch-1", site="branch", slots=2)
        installation.wait_online("embedded", "branch-1")
        url = json.loads((installation.home / "client.json").read_text())["server"]
        # for the docs' screenshots the backup lasts several progress reports (the session
        # page draws its throughput chart); the tests alone keep CI quick
        big_mib = 384 if wanted else 4
        source = make_source(tmp_path_factory.mktemp("src"), big_mib)
        made = Console(installation, url, source, shots)
        made.add_users(USERS, PASSWORD)
        yield made
    finally:
        installation.stop()


def _watch(page: Any, problems: list[str]) -> None:
    def on_console(message: Any) -> None:
        if message.type == "error" and not _EXPECTED_NETWORK_LOG.match(message.text):
            problems.append(f"console error on {page.url}: {message.text}")

    def on_response(response: Any) -> None:
        if response.status >= 500:
            problems.append(f"{response.status} from {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error on {page.url}: {error}"))
    page.on("response", on_response)


@dataclass
class Browsing:
    """Opens signed-in pages; collects every console error and page error they produce."""

    browser: Any
    console: Console
    problems: list[str] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)

    def open(self, user: str | None = None) -> Any:
        """A fresh browser context (own cookies) at the console; signed in as ``user``."""
        context = self.browser.new_context(
            base_url=self.console.url, ignore_https_errors=True, viewport=VIEWPORT
        )
        context.set_default_timeout(WAIT_MS)
        self.contexts.append(context)
        page = context.new_page()
        _watch(page, self.problems)
        page.goto("/")
        if user is not None:
            sign_in(page, user=user, password=self.console.passwords[user])
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(browser: Any, console: Console) -> Iterator[Browsing]:
    """Pages for one test; any console error on any of them fails the test."""
    opened = Browsing(browser, console)
    try:
        yield opened
    finally:
        opened.close()
    assert opened.problems == [], "\n".join(opened.problems)


def view(page: Any, name: str) -> Any:
    """The root element of a view once its first data load is done."""
    root = page.locator(f'[data-view="{name}"][data-ready="1"]')
    root.wait_for(state="visible", timeout=WAIT_MS)
    return root


def go(page: Any, route: str, name: str) -> Any:
    """Navigate by hash route (no reload) and wait for the view to be ready."""
    page.evaluate("route => { window.location.hash = route }", route)
    return view(page, name)


def sign_in(page: Any, *, user: str | None = None, password: str | None = None,
            token: str | None = None) -> None:  # fmt: skip
    """Fill the sign-in form as a person does and wait for the dashboard."""
    form = view(page, "login").locator('form[data-form="login"]')
    if token is not None:
        token_input = form.locator('input[name="token"]')
        if not token_input.is_visible():  # a "use an API token" switch shows it
            form.locator('[data-action="login-mode"]').click()
        token_input.fill(token)
    else:
        form.locator('input[name="user"]').fill(user or "")
        form.locator('input[name="password"]').fill(password or "")
    submit(form)
    view(page, "dashboard")


def submit(form: Any) -> None:
    button = form.locator('button[type="submit"]')
    if button.count():
        button.first.click()
    else:
        form.evaluate("f => f.requestSubmit()")


def fill(form: Any, name: str, value: str | list[str]) -> None:
    """Set the input called ``name`` whatever it is: text, select, checkboxes, textarea."""
    field_ = form.locator(f'[name="{name}"]')
    first = field_.first
    tag = first.evaluate("e => e.tagName.toLowerCase()")
    kind = (first.get_attribute("type") or "").lower()
    values = value if isinstance(value, list) else [value]
    if tag == "select":
        first.select_option(values)
    elif kind in ("checkbox", "radio"):
        for item in values:
            field_.and_(form.locator(f'[value="{item}"]')).check()
    else:
        first.fill(", ".join(values))
