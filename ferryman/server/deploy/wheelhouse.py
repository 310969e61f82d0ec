"""The wheelhouse: Ferryman and its dependencies as wheels for one host platform, and the bundle.

Built by the server (the host needs no internet), cached under
`<wheelhouse dir>/<version>/<python tag>-<arch>-glibc<version>/`:

- `wheels/`: the `ferryman` wheel (built from the server's own source tree, or taken
  from `<wheelhouse dir>/ferryman-<version>-*.whl` for installs without one) and every
  dependency, downloaded by pip for the host's Python and platform, pinned by
  `constraints.txt` when the source tree has one;
- `bundle.tar.gz`: those wheels installed by pip (`--target`) into a site-packages tree,
  which the host unpacks into a fresh virtual environment — seconds instead of the half
  minute a pip install on the host takes (docs/decisions/0005-proxy-deployment.md);
- `manifest.json`: size and SHA-256 of every file of the bundle, to verify an install;
- `complete.json`: written last; a folder without it is rebuilt.

When the server runs from a checkout, the folder name also carries a digest of the
source tree (a checkout changes without its version changing). The dependencies,
installed once per exact set of wheels under `dependencies/`, are hard-linked into
each version's bundle, so a new Ferryman version only installs its own wheel.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ferryman
from ferryman.server.deploy.analysis import HostFacts
from ferryman.server.deploy.errors import DeployError

PIP_TIMEOUT = 900


@dataclass(frozen=True)
class HostPlatform:
    python: tuple[int, int]
    arch: str
    glibc: tuple[int, int]

    @classmethod
    def from_facts(cls, facts: HostFacts) -> HostPlatform:
        if not facts.arch or not facts.python or not facts.glibc:
            raise DeployError("cannot tell the host's platform (architecture, Python, glibc)")
        major, minor = facts.python_tuple[:2]
        g_major, g_minor = (int(x) for x in facts.glibc.split(".")[:2])
        return cls((major, minor), facts.arch, (g_major, g_minor))

    @property
    def key(self) -> str:
        return (
            f"cp{self.python[0]}{self.python[1]}-{self.arch}-glibc{self.glibc[0]}.{self.glibc[1]}"
        )

    def pip_target_options(self) -> list[str]:
        """pip options selecting wheels for this platform (binary only, any glibc <= the host's)."""
        tag = f"cp{self.python[0]}{self.python[1]}"
        options = [
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            f"{self.python[0]}.{self.python[1]}",
            "--abi",
            tag,
            "--abi",
            "abi3",
            "--abi",
            "none",
        ]
        if self.glibc[0] == 2:
            for minor in range(self.glibc[1], 4, -1):
                options += ["--platform", f"manylinux_2_{minor}_{self.arch}"]
            options += ["--platform", f"manylinux2014_{self.arch}"]
        options += ["--platform", f"linux_{self.arch}"]
        return options

    @property
    def same_python_as_server(self) -> bool:
        return self.python == sys.version_info[:2]


@dataclass(frozen=True)
class Bundle:
    version: str
    folder: Path
    cached: bool

    @property
    def archive(self) -> Path:
        return self.folder / "bundle.tar.gz"

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"

    @property
    def size(self) -> int:
        return self.archive.stat().st_size


def source_tree() -> Path | None:
    """The checkout the running server comes from, if it runs from one."""
    root = Path(ferryman.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.exists() and 'name = "ferryman"' in pyproject.read_text():
        return root
    return None


@functools.cache
def source_digest(source: Path) -> str:
    """Content digest of the checkout, taken once: the code this server process runs."""
    digest = hashlib.sha256()
    files = [source / "pyproject.toml", *sorted((source / "ferryman").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(source)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per platform at a time, across processes
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _pip(args: list[str], what: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        errors = [x for x in lines if x.strip().lower().startswith("error")]
        detail = (errors or [x for x in lines if x.strip()] or [f"exit status {exc.returncode}"])[
            -1
        ]
        raise DeployError(f"{what} failed: {detail.strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"{what} took more than {PIP_TIMEOUT}s") from exc


def _ferryman_wheel(root: Path, version: str, into: Path) -> Path:
    """Build the wheel of the running version from its source tree (or take a provided one)."""
    provided = sorted(root.glob(f"ferryman-{version}-*.whl"))
    if provided:
        return Path(shutil.copy2(provided[0], into))
    source = source_tree()
    if source is None:
        raise DeployError(
            f"no source tree to build ferryman {version} from and no "
            f"ferryman-{version}-*.whl in {root}: place the wheel of this version there"
        )
    with tempfile.TemporaryDirectory(prefix="ferryman-src-") as tmp:
        # build from a copy: an in-tree build would leave build/ and egg-info in the checkout
        copy = Path(tmp) / "src"
        shutil.copytree(
            source / "ferryman",
            copy / "ferryman",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).exists():
                shutil.copy2(source / name, copy / name)
        _pip(["wheel", "--no-deps", "-w", str(into), str(copy)], "building the wheel")
    wheels = sorted(into.glob(f"ferryman-{version}-*.whl"))
    if not wheels:
        raise DeployError(f"the source tree at {source} did not build ferryman {version}")
    return wheels[0]


def _manifest(tree: Path) -> dict[str, list[object]]:
    files: dict[str, list[object]] = {}
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            files[str(path.relative_to(tree))] = [path.stat().st_size, digest]
    return files


def _reuse_dependencies(root: Path, platform: HostPlatform, into: Path) -> None:
    """Seed a new wheelhouse with the dependency wheels of a finished one (pip skips them)."""
    for done in root.glob(f"*/{platform.key}*/complete.json"):
        for wheel in done.parent.glob("wheels/*.whl"):
            target = into / wheel.name
            if not wheel.name.startswith("ferryman-") and not target.exists():
                _link_or_copy(wheel, target)


def _link_or_copy(source: str | Path, target: str | Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _installed_dependencies(
    root: Path, platform: HostPlatform, wheels: list[Path], pip_install: list[str]
) -> Path:
    """The dependencies installed into a site-packages tree, cached by their exact wheels."""
    key = hashlib.sha256("\n".join(w.name for w in wheels).encode()).hexdigest()[:12]
    folder = root / "dependencies" / f"{platform.key}-{key}"
    with _locked(folder):
        tree = folder / "site-packages"
        if not (folder / "complete").exists():
            shutil.rmtree(tree, ignore_errors=True)
            _pip(
                [*pip_install, "--target", str(tree), *map(str, wheels)],
                "installing the dependencies into the bundle",
            )
            shutil.rmtree(tree / "bin", ignore_errors=True)  # scripts for the server's Python
            (folder / "complete").touch()
        return tree


def ensure_bundle(root: Path, platform: HostPlatform, version: str | None = None) -> Bundle:
    """The cached bundle for this version and platform, built first when missing. Blocking."""
    version = version or ferryman.__version__
    folder = root / version / platform.key
    source = source_tree()
    if source is not None and not list(root.glob(f"ferryman-{version}-*.whl")):
        # a checkout changes without its version changing: key its builds by content too
        folder = root / version / f"{platform.key}-src{source_digest(source)}"
    with _locked(folder):
        if (folder / "complete.json").exists():
            return Bundle(version, folder, cached=True)
        started = time.monotonic()
        for stale in ("wheels", "bundle.tar.gz", "manifest.json"):
            target = folder / stale
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        wheels = folder / "wheels"
        wheels.mkdir()
        wheel = _ferryman_wheel(root, version, wheels)
        _reuse_dependencies(root, platform, wheels)
        constraints: list[str] = []
        if source is not None and (source / "constraints.txt").exists():
            constraints = ["-c", str(source / "constraints.txt")]
        target_options = platform.pip_target_options()
        _pip(
            ["download", "-d", str(wheels), *target_options, *constraints, str(wheel)],
            "downloading the dependencies",
        )
        with tempfile.TemporaryDirectory(prefix="ferryman-bundle-", dir=folder) as tmp:
            stage = Path(tmp) / "site-packages"
            compile_options = [] if platform.same_python_as_server else ["--no-compile"]
            pip_install = ["install", "--no-index", "--no-deps", *target_options, *compile_options]
            dependencies = sorted(w for w in wheels.glob("*.whl") if w != wheel)
            installed = _installed_dependencies(root, platform, dependencies, pip_install)
            # hard links: the dependencies' tree is shared by every version's bundle
            shutil.copytree(installed, stage, copy_function=_link_or_copy)
            _pip(
                [*pip_install, "--target", str(stage), str(wheel)],
                "installing ferryman into the bundle",
            )
            shutil.rmtree(stage / "bin", ignore_errors=True)  # scripts for the server's Python
            (folder / "manifest.json").write_text(json.dumps(_manifest(stage)))
            with tarfile.open(folder / "bundle.tar.gz.tmp", "w:gz", compresslevel=1) as tar:
                tar.add(stage, arcname=".")
            os.replace(folder / "bundle.tar.gz.tmp", folder / "bundle.tar.gz")
        summary = {
            "version": version,
            "platform": platform.key,
            "wheels": sorted(p.name for p in wheels.glob("*.whl")),
            "built_seconds": round(time.monotonic() - started, 1),
        }
        (folder / "complete.json").write_text(json.dumps(summary, indent=2) + "\n")
        return Bundle(version, folder, cached=False)
