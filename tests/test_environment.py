"""The environment is the lock file (requirements/lock.txt): the whole dependency set, pinned, and what it covers.

`make venv` installs exactly the lock, then the project without resolving anything (`--no-deps`); these tests
check that the lock satisfies every dependency pyproject.toml declares and that the running environment holds the
lock's versions, so a fresh clone's `make test` runs on the set the README's times were measured with.
"""
from __future__ import annotations

import platform
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
# torch's CUDA libraries: in the lock because PyPI's Linux x86-64 torch is the CUDA build; other platforms lack them
CUDA_ONLY = ("nvidia-", "triton")


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """{canonical name: pinned version} of a lock file of `name==version` lines (comments and blanks skipped)."""
    pins = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version:
            raise ValueError(f"{path}:{n}: expected name==version, got {line!r}")
        pins[canonicalize_name(name)] = version.strip()
    return pins


def unmet(requirements: list[str], pins: dict[str, str]) -> list[str]:
    """The requirements (PEP 508 strings) that the pinned versions do not satisfy, with why."""
    out = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            out.append(f"{text}: not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            out.append(f"{text}: the lock pins {version}")
    return out


def test_the_lock_satisfies_every_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    problems = unmet(declared, read_lock())
    assert not problems, "requirements/lock.txt is stale (run `make lock`):\n" + "\n".join(problems)


def test_unmet_names_a_missing_package_and_a_wrong_pin():
    pins = {"torch": "2.14.1", "numpy": "1.0"}
    assert unmet(["torch>=2.4,<2.16", "numpy>=1.26", "scipy>=1.11"], pins) == [
        "numpy>=1.26: the lock pins 1.0", "scipy>=1.11: not in the lock"]


def test_the_environment_holds_the_locked_versions():
    cuda_platform = sys.platform == "linux" and platform.machine() == "x86_64"
    wrong = []
    for name, version in read_lock().items():
        if name.startswith(CUDA_ONLY) and not cuda_platform:
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}=={version}: not installed")
            continue
        if installed != version:
            wrong.append(f"{name}=={version}: {installed} installed")
    assert not wrong, ("this environment is not the lock's (`make venv` builds it; an existing one: "
                       "pip install -r requirements/lock.txt):\n" + "\n".join(wrong))


def test_the_torch_pair_agrees_with_the_lock():
    pins, pair = read_lock(), read_lock(ROOT / "requirements" / "torch.txt")
    assert {k: pins[k] for k in pair} == pair


def test_setup_doc_states_the_locks_size():
    """docs/SETUP.md's package count is the lock's (a prose number checked against its source)."""
    text = (ROOT / "docs" / "SETUP.md").read_text()
    assert f"pinned ({len(read_lock())} packages)" in text
