"""Seeding, device selection, code version, the cache-key and fingerprint helpers, atomic writes."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
import subprocess
import tempfile
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as text_tqdm

from nbhelpers import __version__, paths


# how progress bars render: "auto" (tqdm.auto: widgets in Jupyter, text elsewhere) or "text" (plain text everywhere:
# scripts/run_notebooks.py renders the committed notebooks so, since a stored widget shows only its first frame)
PROGRESS_ENV = "TIMA_PROGRESS"
PROGRESS_MODES = ("auto", "text")


def progress_bar(iterable: object = None, **kwargs: object) -> auto_tqdm:
    """A tqdm.auto progress bar, or a plain-text one where the environment sets TIMA_PROGRESS=text (kwargs: tqdm's)."""
    mode = os.environ.get(PROGRESS_ENV, "auto")
    if mode not in PROGRESS_MODES:
        raise ValueError(f"environment variable {PROGRESS_ENV} must be one of {PROGRESS_MODES}, got {mode!r}")
    return (text_tqdm if mode == "text" else auto_tqdm)(iterable, **kwargs)


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; on CPU also ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def select_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def code_version() -> str:
    """git commit of the project (with '+dirty' for local changes), or the package version outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=paths.PROJECT_ROOT, text=True,
                             capture_output=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "nbhelpers"],
                               cwd=paths.PROJECT_ROOT, text=True, capture_output=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"nbhelpers-{__version__}"


def content_key(payload: object, *, length: int = 12) -> str:
    """Short sha256 of a JSON-serialisable payload: the one cache-key helper of the package."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:length]


def tensor_fingerprint(tensors: torch.Tensor | Mapping[str, torch.Tensor], *, length: int = 16) -> str:
    """Short sha256 of tensor values: the one fingerprint helper of the package (weights, class embeddings).

    A single tensor hashes its float32 bytes; a mapping (e.g. a state_dict) hashes, in key order, each name,
    shape and float32 bytes, so renamed or reshaped weights get a different fingerprint.
    """
    h = hashlib.sha256()
    items = [(None, tensors)] if isinstance(tensors, torch.Tensor) else sorted(tensors.items())
    for name, t in items:
        if name is not None:
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]


def fp32_at_least(x: torch.Tensor) -> torch.Tensor:
    """x itself when float32 or float64, else x.float(): half precision (bf16, fp16) goes up to float32 and float64
    stays float64 (tests/test_numerics.py runs its cases in float64); on float32 the very same tensor, as .float()."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def pack_mask(correct: torch.Tensor | np.ndarray) -> str:
    """Boolean mask (N,) -> hex string of its packed bits (per-sample correctness in result rows)."""
    return np.packbits(np.asarray(correct).astype(np.uint8)).tobytes().hex()


def unpack_mask(hexbits: str, n: int) -> np.ndarray:
    """Hex string from pack_mask -> boolean array (n,)."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(hexbits), dtype=np.uint8))[:n].astype(bool)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    return sha256_file(path)


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, cached per (path, size, mtime, ctime, inode) so large weight files are read once
    per process; a file changed in the last 2 s is always re-read (coarse file-system clocks)."""
    st = os.stat(path)
    if time.time() - st.st_mtime < 2.0:
        return sha256_file(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def numerics_versions(*modules: types.ModuleType) -> dict[str, int]:
    """{module name: its NUMERICS_VERSION}: what cache and store keys hold of the code that made a result.

    Each module that computes numbers declares NUMERICS_VERSION beside its code and bumps it with any change that
    changes them; a comment, docstring, rename or move changes no key (unlike a hash of the source), and nothing
    computed (floats differ in their last bits between CPUs) enters a key. tests/test_numerics.py re-runs a tiny
    case of every method, IAT and attack and fails, naming the constant to bump, when outputs change without a bump.
    """
    missing = [m.__name__ for m in modules if not isinstance(getattr(m, "NUMERICS_VERSION", None), int)]
    if missing:
        raise AttributeError(f"modules {missing} declare no integer NUMERICS_VERSION")
    return {m.__name__.rsplit(".", 1)[-1]: int(m.NUMERICS_VERSION) for m in modules}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
