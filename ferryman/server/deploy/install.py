"""Installing the proxy on the host from the bundle: account, folders, venv, launcher.

Every function is idempotent: it checks what is there and repairs what is not, so
re-running a deployment repairs a broken install and changes nothing on a sound one.
"""

from __future__ import annotations

import base64
import json
import shlex

from ferryman.server.deploy.connection import HostConnection
from ferryman.server.deploy.errors import DeployError
from ferryman.server.deploy.layout import Layout, ProxySettings
from ferryman.server.deploy.wheelhouse import Bundle

# Runs on the host (its own Python): compares the venv's site-packages with the manifest.
VERIFY_SCRIPT = r"""
import hashlib, json, os, subprocess, sys
venv = sys.argv[1]
manifest = json.load(sys.stdin)
python = os.path.join(venv, "bin", "python")
if not os.path.exists(python):
    print("no virtual environment"); sys.exit(0)
try:
    site = subprocess.check_output([python, "-I", "-c",
        "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
except (OSError, subprocess.CalledProcessError) as exc:
    print("the virtual environment does not run: %s" % exc); sys.exit(0)
bad = []
for rel, (size, digest) in manifest.items():
    path = os.path.join(site, rel)
    try:
        if os.path.getsize(path) != size:
            bad.append(rel); continue
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != digest:
                bad.append(rel)
    except OSError:
        bad.append(rel)
if bad:
    print("%d file(s) missing or changed, e.g. %s" % (len(bad), bad[0]))
else:
    print("ok")
"""


def _q(text: str) -> str:
    return shlex.quote(text)


async def resolve_root(host: HostConnection, install_dir: str) -> str:
    """Expand `~` on the host (the login user's home)."""
    if not install_dir.startswith("~"):
        return install_dir.rstrip("/") or "/"
    result = await host.run(f"echo {install_dir.replace(' ', '')}", what="resolving ~")
    return result.stdout.strip().rstrip("/")


async def prepare(host: HostConnection, layout: Layout, python: str) -> str:
    """Service account (with root rights) and folders; returns what it did."""
    done = []
    root = _q(layout.root)
    script = "set -e\n"
    if layout.account:
        account = _q(layout.account)
        script += (
            f"if ! id -u {account} >/dev/null 2>&1; then "
            f"useradd --system --no-create-home --home-dir {root} "
            f"--shell /usr/sbin/nologin {account}; echo created-account; fi\n"
        )
    script += f"mkdir -p {root} {_q(layout.home)} {_q(layout.run)}\nchmod 755 {root}\n"
    if layout.account:
        owner = f"{_q(layout.account)}:{_q(layout.account)}"
        script += f"chown -R {owner} {_q(layout.home)} {_q(layout.run)}\n"
        script += f"chmod 700 {_q(layout.home)}\n"
    result = await host.run(script, what="preparing the install folder")
    if layout.account:
        runs = await host.run(f"runuser -u {_q(layout.account)} -- {_q(python)} -c ''", check=False)
        if runs.status != 0:
            reason = (runs.stderr.strip() or f"exit status {runs.status}").splitlines()[-1]
            raise DeployError(
                f"the service account {layout.account} cannot run {python} ({reason}): "
                "install a system-wide Python >= 3.11"
            )
    if "created-account" in result.stdout:
        done.append(f"created service account {layout.account}")
    done.append(f"folder {layout.root}")
    return ", ".join(done)


async def verify(host: HostConnection, layout: Layout, bundle: Bundle, python: str) -> str:
    """'ok' when the venv holds exactly the bundle, else what is wrong."""
    result = await host.run(
        f"{_q(python)} -c {_q(VERIFY_SCRIPT)} {_q(layout.venv)}",
        input=bundle.manifest.read_text(),
        what="verifying the install",
    )
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "no answer"


async def install_bundle(host: HostConnection, layout: Layout, bundle: Bundle, python: str) -> None:
    """Stream the bundle straight into a new venv (unpacking overlaps the upload), then
    swap it in for the old one at once."""
    new, old = f"{layout.venv}.new", f"{layout.venv}.old"
    script = f"""set -e
rm -rf {_q(new)} {_q(old)}
{_q(python)} -m venv --without-pip {_q(new)}
site=$({_q(new)}/bin/python -I -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
tar -xzf - -C "$site" --no-same-owner
chmod -R go-w {_q(new)}
if [ -d {_q(layout.venv)} ]; then mv {_q(layout.venv)} {_q(old)}; fi
mv {_q(new)} {_q(layout.venv)}
rm -rf {_q(old)}
"""
    await host.run(script, stdin=bundle.archive, what="installing the virtual environment")


def _write(path: str, text: str, mode: str) -> str:
    """Shell lines writing `text` to `path` atomically (base64: no quoting pitfalls)."""
    data = base64.b64encode(text.encode()).decode()
    return f"printf '%s' {_q(data)} | base64 -d > {_q(path)}.tmp && chmod {mode} {_q(path)}.tmp\n"


async def configure(
    host: HostConnection,
    layout: Layout,
    settings: ProxySettings,
    join_token: str | None,
    record: dict[str, str],
) -> bool:
    """Write the launcher, the join token (when one is needed; sent on stdin, never on a
    command line) and the version marker, in one round trip; True when the launcher changed."""
    launcher = layout.launcher
    script = "set -e\n" + _write(launcher, layout.launcher_text(settings), "755")
    script += (
        f"if cmp -s {_q(launcher)}.tmp {_q(launcher)}; then rm -f {_q(launcher)}.tmp; "
        f"else mv {_q(launcher)}.tmp {_q(launcher)}; echo launcher-changed; fi\n"
    )
    if join_token is not None:
        env = _q(layout.env_file)
        owner = f"chown {_q(layout.account)} {env}.tmp\n" if layout.account else ""
        script += (
            f"IFS= read -r token\n(umask 077; printf 'FERRYMAN_JOIN_TOKEN=%s\\n' \"$token\" "
            f"> {env}.tmp)\n{owner}mv {env}.tmp {env}\n"
        )
    deployment = f"{layout.root}/deployment.json"
    script += _write(deployment, json.dumps(record) + "\n", "644")
    script += f"mv {_q(deployment)}.tmp {_q(deployment)}\n"
    script += f"echo {_q(record['version'])} > {_q(layout.version_file)}\n"
    result = await host.run(
        script,
        input=f"{join_token}\n" if join_token is not None else None,
        what="writing the configuration",
    )
    return "launcher-changed" in result.stdout


async def forget_join_token(host: HostConnection, layout: Layout) -> None:
    await host.run(f"rm -f {_q(layout.env_file)}", check=False)


async def has_identity(host: HostConnection, layout: Layout) -> bool:
    result = await host.run(
        f"test -f {_q(layout.home)}/proxy.json && test -f {_q(layout.home)}/proxy.pem", check=False
    )
    return result.status == 0


async def reset_identity(host: HostConnection, layout: Layout) -> None:
    files = " ".join(
        _q(f"{layout.home}/{n}") for n in ("proxy.json", "proxy.pem", "proxy.key", "ca.pem")
    )
    await host.run(f"rm -f {files}", what="removing the stale identity")


async def uninstall_files(host: HostConnection, layout: Layout) -> None:
    script = f"rm -rf {_q(layout.root)}\n"
    if layout.account:
        account = _q(layout.account)
        script += f"if id -u {account} >/dev/null 2>&1; then userdel {account}; fi\n"
    await host.run(script, what="removing the files")
