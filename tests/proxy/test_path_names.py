"""Names as bytes <-> JSON-safe text: every name reads back to its exact bytes."""

from __future__ import annotations

import json
import os

import pytest

from ferryman.proxy.path_names import b64, display, from_b64, json_safe, parse

NAMES = [
    b"plain.txt",
    "été ✓.txt".encode(),
    b"caf\xe9.txt",  # Latin-1
    b"back\\slash\xff",
    b"\xff\xfe",
    b"utf8 with literal \\x41 text",  # must not be read as an escape
    b"line\nbreak\x80",
    b"C:\\new",
]


@pytest.mark.parametrize("raw", NAMES)
def test_round_trip(raw: bytes) -> None:
    shown = display(raw)
    json.dumps(shown)  # always JSON-safe
    assert parse(shown) == raw
    assert from_b64(b64(raw)) == raw


def test_examples() -> None:
    assert display(b"caf\xe9.txt") == "caf\\xe9.txt"
    assert display(b"a\\b\xff") == "a\\\\b\\xff"
    assert display(b"plain\\name") == "plain\\name"  # no escapes: shown as is
    assert parse("plain\\name") == b"plain\\name"
    # a shell hands undecodable bytes over as surrogates: kept exactly
    assert parse(os.fsdecode(b"/dir-\xff/x")) == b"/dir-\xff/x"


def test_json_safe_walks_containers() -> None:
    value = {"path": os.fsdecode(b"a\xff"), "list": [os.fsdecode(b"\xfe")], "n": 3}
    assert json_safe(value) == {"path": "a\\xff", "list": ["\\xfe"], "n": 3}
    json.dumps(json_safe(value))


def test_bad_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="path_b64 is not valid base64"):
        from_b64("not base64!")
