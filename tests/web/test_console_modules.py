"""The console's own logic, run in Debian's chromium on the shipped ES modules.

The modules are served as they are (a plain static HTTP server on loopback, no
backup server needed) and called from the page: the throughput chart's rates,
which input a refused request blames, the hash router, and the CLI-compatible
byte/duration formats.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ferryman.web import STATIC_DIR

from .conftest import VIEWPORT, need_playwright

need_playwright()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def static_url() -> Iterator[str]:
    """The console's files at http://127.0.0.1:PORT/static/ (as the server lays them out)."""
    handler = functools.partial(_Quiet, directory=str(STATIC_DIR.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/static/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def call(browser: Any, static_url: str) -> Iterator[Any]:
    """``call(module, expression)``: evaluates ``expression`` with the module imported as ``m``."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    problems: list[str] = []

    def on_response(response: Any) -> None:
        # a module that fails to load (the browser's own favicon.ico request aside)
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            problems.append(f"{response.status} {response.url}")

    def on_console(message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(static_url + "vendor/README.md")  # any same-origin page; the modules load from it

    def run(module: str, expression: str) -> Any:
        return page.evaluate(
            f"async () => {{ const m = await import('{static_url}{module}');"
            f" return {expression}; }}"
        )

    yield run
    context.close()
    assert problems == []


def test_throughput_rates_per_proxy_and_total(call: Any) -> None:
    # task 1 on p1 reads 10 MB/s for 4 s; task 2 on p2 reads 5 MB/s from t=2 to t=4
    samples = [
        *({"t": 100 + s, "proxy": "p1", "task": 1, "bytes_read": s * 10e6} for s in range(5)),
        *({"t": 102 + s, "proxy": "p2", "task": 2, "bytes_read": s * 5e6} for s in range(3)),
    ]
    rates = call("components/throughput.js", f"m.ratesFromSamples({samples!r})".replace("'", '"'))
    assert rates["times"] == [101, 102, 103, 104]
    assert rates["perProxy"]["p1"] == pytest.approx([10, 10, 10, 10])
    assert rates["perProxy"]["p2"] == pytest.approx([0, 0, 5, 5])
    assert rates["total"] == pytest.approx([10, 10, 15, 15])


def test_throughput_spreads_uneven_samples_over_the_seconds_they_cover(call: Any) -> None:
    # 30 MB between t=0 and t=3 (one late sample) is 10 MB/s in each of the three seconds
    samples = [
        {"t": 0, "proxy": "p1", "task": 1, "bytes_read": 0},
        {"t": 3, "proxy": "p1", "task": 1, "bytes_read": 30e6},
    ]
    rates = call("components/throughput.js", f"m.ratesFromSamples({samples!r})".replace("'", '"'))
    assert rates["total"] == pytest.approx([10, 10, 10])
    assert call("components/throughput.js", "m.ratesFromSamples([]).times") == []


def test_a_refused_request_is_shown_next_to_the_input_it_names(call: Any) -> None:
    fields = '["name", "url", "schedule"]'
    blame = "m.blamedField({{status: {}, detail: {!r}, field: {}}}, " + fields + ")"
    assert call("components/form.js", blame.format(422, "bad", '"url"')) == "url"
    # a field the form does not have: shown at the form's top
    assert call("components/form.js", blame.format(422, "bad", '"priority"')) is None
    # without "field": a leading "schedule: " in the detail, or a taken name (409)
    assert call("components/form.js", blame.format(422, "schedule: invalid cron", "null")) == (
        "schedule"
    )
    assert call(
        "components/form.js", blame.format(409, "a job named 'x' already exists", "null")
    ) == ("name")
    assert (
        call("components/form.js", blame.format(409, "job 'x' is already running", "null")) is None
    )


def test_hash_routes(call: Any) -> None:
    route = "m.parseHash({!r})"
    assert call("router.js", route.format("")) == {"name": "dashboard", "id": None, "query": {}}
    assert call("router.js", route.format("#/sessions/7")) == {
        "name": "session",
        "id": "7",
        "query": {},
    }
    assert call("router.js", route.format("#/restore?share=my%20docs&point=3")) == {
        "name": "restore",
        "id": None,
        "query": {"share": "my docs", "point": "3"},
    }


def test_sizes_and_durations_read_as_in_the_cli(call: Any) -> None:
    shown = call(
        "format.js",
        "[m.bytes(0), m.bytes(1536), m.bytes(5 * 1024 ** 3), m.bytes(null), m.rate(52428800),"
        " m.duration(4.26), m.duration(75.2), m.duration(3725), m.ratio(2.5)]",
    )
    assert shown == [
        "0 B",
        "1.5 KiB",
        "5.0 GiB",
        "\N{EN DASH}",  # no value
        "50.0 MiB/s",
        "4.3s",
        "1m15s",
        "1h02m05s",
        "2.50x",
    ]


def test_deploy_steps_are_read_line_by_line_across_chunks(call: Any) -> None:
    events = [
        {"event": "step", "step": "connect", "detail": "h1 \N{EM DASH} known", "seconds": 0.07},
        {"event": "step", "step": "analyse", "detail": "h1", "seconds": 0.9, "lines": ["  ok  py"]},
        {"event": "done", "proxy": "h1", "version": "0.1.0", "service": "systemd", "seconds": 6.1},
    ]
    text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events)
    data = text.encode()
    # the answer arrives in chunks that cut lines, and the dash's three bytes, in two
    dash = data.index("\N{EM DASH}".encode())
    cuts = [0, dash + 1, dash + 2, data.index(b"\n") + 3, len(data) - 5, len(data)]
    read = call(
        "views/deploy.js",
        f"""(async () => {{
          const bytes = new TextEncoder().encode({json.dumps(text)});
          const cuts = {json.dumps(cuts)};
          const body = new ReadableStream({{ start(c) {{
            for (let i = 1; i < cuts.length; i++) c.enqueue(bytes.slice(cuts[i - 1], cuts[i]));
            c.close();
          }} }});
          const lines = [];
          for await (const event of m.ndjson(new Response(body))) lines.push(m.stepLine(event));
          return lines;
        }})()""",
    )
    assert read == [
        "connect          0.07s  h1 \N{EM DASH} known",
        "analyse          0.90s  h1\n  ok  py",
        "proxy h1 deployed: version 0.1.0, systemd, 6.10s",
    ]
