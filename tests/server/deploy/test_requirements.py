"""The requirement rules, the service definitions and the target/host-key parsing."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from ferryman.server.deploy.analysis import HostFacts, _best_python, evaluate, report_lines
from ferryman.server.deploy.errors import DeployError, HostKeyError
from ferryman.server.deploy.host_keys import KnownHosts
from ferryman.server.deploy.layout import Layout, ProxySettings
from ferryman.server.deploy.target import Credentials, SshTarget
from ferryman.server.deploy.wheelhouse import HostPlatform

GiB = 1024**3


def good_host(**changes: object) -> HostFacts:
    facts = HostFacts(
        os="Linux",
        arch="x86_64",
        distro="Debian 12",
        hostname="h1",
        python="3.11.2",
        python_path="/usr/bin/python3.11",
        glibc="2.36",
        venv=True,
        cores=8,
        memory_total=16 * GiB,
        memory_available=12 * GiB,
        disk_free=50 * GiB,
        disk_path="/var/lib",
        systemd=True,
        uid=0,
        clock_skew=0.2,
        reach_ms=1.0,
        server_address="10.0.0.1:8443",
    )
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def levels(facts: HostFacts) -> dict[str, str]:
    return {c.name: c.level for c in evaluate(facts).checks}


def test_a_good_host_passes_and_gets_slots_from_cores_and_memory() -> None:
    report = evaluate(good_host())
    assert not report.hard_failures and not report.soft_failures
    assert report.suggested_slots == 8
    # memory bounds the slots: 2 GiB available -> (2 GiB - 512 MiB) / 512 MiB = 3
    assert evaluate(good_host(memory_available=2 * GiB)).suggested_slots == 3


def test_hard_requirements() -> None:
    assert levels(good_host(python=None, venv=False))["python"] == "hard"
    assert levels(good_host(python="3.9.2"))["python"] == "hard"
    assert levels(good_host(venv=False))["python"] == "hard"
    assert levels(good_host(os="FreeBSD"))["os"] == "hard"
    assert levels(good_host(arch="armv7l"))["architecture"] == "hard"
    assert levels(good_host(disk_free=100 * 1024**2))["free disk"] == "hard"
    assert levels(good_host(clock_skew=-600.0))["clock skew"] == "hard"
    denied = evaluate(good_host(install_denied="[Errno 13] Permission denied: '/root/x'"))
    assert [(c.name, c.level) for c in denied.hard_failures] == [("install folder", "hard")]
    unreachable = evaluate(good_host(reach="[Errno 111] Connection refused"))
    assert [c.name for c in unreachable.hard_failures] == ["reaches server"]
    assert "Connection refused" in unreachable.hard_failures[0].message


def test_soft_requirements_and_notes() -> None:
    small = evaluate(good_host(memory_total=512 * 1024**2, memory_available=400 * 1024**2))
    assert [c.name for c in small.soft_failures] == ["memory"]
    assert small.suggested_slots == 1
    assert levels(good_host(disk_free=700 * 1024**2))["free disk"] == "soft"
    assert levels(good_host(clock_skew=12.0))["clock skew"] == "soft"
    assert levels(good_host(systemd=False))["systemd"] == "note"
    lines = report_lines(small)
    assert any(line.startswith("  WARN memory") and "recommended" in line for line in lines)


def test_python_choice() -> None:
    listing = "3.12 /usr/bin/python3.12\n3.11 /usr/local/bin/python3.11\ngarbage\n"
    assert _best_python(listing) == "/usr/bin/python3.12"
    # a system Python before one in a home folder, which a service account cannot run
    assert _best_python("3.13 /root/.pyenv/bin/python3.13\n3.11 /usr/bin/python3.11") == (
        "/usr/bin/python3.11"
    )
    # ... unless it is too old
    assert _best_python("3.13 /root/.pyenv/bin/python3.13\n3.9 /usr/bin/python3.9") == (
        "/root/.pyenv/bin/python3.13"
    )
    assert _best_python("") == ""


def test_platform_tags_for_pip() -> None:
    platform = HostPlatform.from_facts(good_host())
    assert platform.key == "cp311-x86_64-glibc2.36"
    options = platform.pip_target_options()
    assert "manylinux_2_36_x86_64" in options and "manylinux_2_17_x86_64" in options
    assert "manylinux_2_37_x86_64" not in options
    assert options[options.index("--python-version") + 1] == "3.11"


def test_targets() -> None:
    assert SshTarget.parse("ssh://admin@host.example:2222") == SshTarget(
        "admin", "host.example", 2222
    )
    assert SshTarget.parse("root@10.1.2.3") == SshTarget("root", "10.1.2.3", 22)
    assert SshTarget.parse("ssh://u@[fe80::1]:22").host == "fe80::1"
    for bad in ("host-only", "ssh://u@h:99999", "ssh://u@h:x", "u@h; rm -rf /"):
        with pytest.raises(DeployError):
            SshTarget.parse(bad)
    with pytest.raises(DeployError, match="--identity"):
        Credentials()
    assert "hunter2" not in repr(Credentials(password="hunter2"))


def test_systemd_unit_and_launcher() -> None:
    layout = Layout("/var/lib/ferryman-proxy", "ferryman-proxy", systemd=True)
    unit = layout.unit_text()
    assert "User=ferryman-proxy" in unit
    assert "ExecStart=/var/lib/ferryman-proxy/ferryman-proxy" in unit
    assert "Restart=on-failure" in unit
    assert "WantedBy=multi-user.target" in unit  # started at boot once enabled
    assert "EnvironmentFile=-/var/lib/ferryman-proxy/proxy.env" in unit
    # the restore workers' socket in /run/ferryman-proxy ($RUNTIME_DIRECTORY), not /tmp
    assert "RuntimeDirectory=ferryman-proxy" in unit
    launcher = layout.launcher_text(ProxySettings("https://10.0.0.1:8443", "p 1", "hq", 3))
    assert launcher.startswith("#!/bin/sh\n")
    assert (
        "exec /var/lib/ferryman-proxy/venv/bin/python -m ferryman.cli proxy run "
        "--server https://10.0.0.1:8443 --name 'p 1' --home /var/lib/ferryman-proxy/home "
        "--site hq --slots 3"
    ) in launcher
    assert "JOIN" not in launcher  # the token lives in proxy.env, not on a command line
    user = Layout("/home/u/.ferryman-proxy", None, systemd=False)
    assert "User=" not in user.unit_text()


def test_known_hosts_trust_on_first_use_then_refuse_a_change(tmp_path: Path) -> None:
    known = KnownHosts(tmp_path / "known_hosts")
    first = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(HostKeyError, match=r"unknown host key .*--trust-host-key"):
        known.check("h", 2222, first, trust_new=False)
    assert not known.path.exists()
    assert known.check("h", 2222, first, trust_new=True).startswith("recorded")
    assert known.path.read_text().startswith("[h]:2222 ssh-ed25519 ")
    assert known.check("h", 2222, first, trust_new=False) == "known"
    with pytest.raises(HostKeyError) as error:
        known.check("h", 2222, other, trust_new=True)
    message = str(error.value)
    assert "CHANGED" in message
    assert str(other.get_fingerprint("sha256")) in message
    assert str(first.get_fingerprint("sha256")) in message
    # another port of the same host is another entry
    assert known.check("h", 22, other, trust_new=True).startswith("recorded")
    assert known.path.read_text().count("\n") == 2
