"""Weights files in every format the peers release, recognised from their content and read safely.

:func:`read_checkpoint` sniffs the container from the file's first bytes (never its name), reads it without
running pickled Python, and recognises what it holds:

- ``openai_torchscript``: OpenAI's TorchScript archive (``ViT-B-32.pt``), the full CLIP. Read with
  ``torch.jit.load(map_location="cpu")``, which ``weights_only`` cannot open. What that trusts: the archive's
  TorchScript code is compiled by the TorchScript runtime (no Python pickle, no arbitrary Python objects: its
  constants are read by a tensors-only unpickler); the only code that runs at load time is a ``__setstate__``
  the archive itself defines, in the TorchScript interpreter. We never call its ``forward``: only
  ``state_dict()`` is used. Check the sha256 in the load report against OpenAI's (``OPENAI_SHA256``).
- ``tecoa_family``: the ``.pth.tar`` of TeCoA, PMG-AFT, TGA-ZSR (and TTC, SAFT, which reuse TeCoA's
  ``save_checkpoint``): ``vision_encoder_state_dict`` (the image tower, OpenAI key names, no prefix),
  ``state_dict`` / ``add_prompter`` (prompters: empty for fine-tuning), ``best_acc1`` (a numpy float64 when it
  comes from ``np.mean``), ``epoch``, ``optimizer``. Read with ``weights_only=True`` plus, for this load only,
  numpy's scalar reconstructor (under its numpy 1 and numpy 2 names), ``numpy.dtype`` and the float64 dtype class.
- ``agft``: AGFT's ``state_dict_train()``: ``{"modules": {"clip.visual": <image tower>}, "params": {}}``.
- ``nbhelpers_finetune``: this project's fine-tuning checkpoint (``nbhelpers.training``): ``visual`` + optimizer.
- ``image_tower``: a bare image-tower state dict (RobustVLM's FARE / TeCoA releases, ``vitb32_fare_eps_1.pt``).
- ``open_clip_full``: a full open_clip state dict, bare or under ``state_dict`` (open_clip's training
  checkpoints), with or without DataParallel's ``module.`` prefix.

Any of the dict formats may come as safetensors (``container == "safetensors"``). Bad input (missing file, a
folder, a truncated file, an unknown format, Python objects the safe loader refuses) raises
:class:`CheckpointError` naming the file and the fix, before any model is built. :func:`check_fits` compares a
checkpoint's keys and shapes with an architecture's and names the architecture the file was made for.
"""
from __future__ import annotations

import functools
import os
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from nbhelpers.utils import file_fingerprint

FORMATS: dict[str, str] = {
    "openai_torchscript": "OpenAI's TorchScript archive (full CLIP)",
    "tecoa_family": "TeCoA-family checkpoint (TeCoA, PMG-AFT, TGA-ZSR, TTC, SAFT: vision_encoder_state_dict)",
    "agft": "AGFT checkpoint ({modules: {clip.visual}, params})",
    "nbhelpers_finetune": "this project's fine-tuning checkpoint (nbhelpers.training: visual)",
    "image_tower": "bare image-tower state dict (RobustVLM FARE/TeCoA releases)",
    "open_clip_full": "full open_clip state dict",
}
TOWERS = ("full", "image")
OPENAI_SHA256 = {"ViT-B-32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"}  # its URL's hash
WEIGHT_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".safetensors", ".ckpt")
_OPENAI_SCALARS = ("input_resolution", "context_length", "vocab_size")  # ints OpenAI's archive keeps as buffers
_TEXT_KEYS = ("token_embedding.weight", "text_projection", "ln_final.weight")
_VISION_KEYS = ("conv1.weight", "class_embedding", "attnpool.c_proj.weight")  # ViT, ModifiedResNet
_FORMAT_LIST = "; ".join(f"{k}: {v}" for k, v in FORMATS.items())
_CONTAINERS = {"torch": "torch.save file", "torchscript": "TorchScript archive", "safetensors": "safetensors file"}


class CheckpointError(ValueError):
    """A weights file that cannot be used as given; the message names the file and the fix."""


@dataclass(frozen=True)
class Checkpoint:
    """A weights file read and recognised: open_clip key names, the full model or the image tower alone."""

    path: str
    sha256: str
    format: str  # a key of FORMATS
    container: str  # "torchscript", "torch" (torch.save) or "safetensors"
    tower: str  # "full" (every tower, open_clip CLIP keys) or "image" (the image tower, keys without 'visual.')
    state_dict: dict[str, torch.Tensor]
    info: dict[str, str] = field(default_factory=dict)  # what else the file holds (epoch, best_acc1, dropped keys)

    def describe(self) -> str:
        """One line: format, container, tower, file and sha256 (what a load report shows)."""
        return f"{self.format} ({self.container}, {self.tower}) {self.path} sha256 {self.sha256[:16]}"


@dataclass(frozen=True)
class LoadReport:
    """Where a model's weights came from: one source per tower, the files read (format, sha256), activation."""

    model: str
    towers: dict[str, str]  # "image" / "text" -> its source
    files: tuple[dict[str, str], ...]  # role, path, format, container, tower, sha256 and the file's info
    quick_gelu: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable) for provenance and notebook display."""
        return {"model": self.model, "towers": dict(self.towers), "files": [dict(f) for f in self.files],
                "quick_gelu": self.quick_gelu, "notes": list(self.notes)}

    def __str__(self) -> str:
        lines = [f"{self.model} ({'QuickGELU' if self.quick_gelu else 'GELU'})"]
        lines += [f"  {tower} tower: {source}" for tower, source in self.towers.items()]
        lines += [f"  file [{f['role']}]: {f['format']} ({f['container']}, {f['tower']}) {f['path']} sha256 "
                  f"{f['sha256']}" for f in self.files]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def check_weights_path(path: str | os.PathLike, *, role: str = "checkpoint") -> Path:
    """The path as a Path if it is a regular non-empty file; else an error that names it and the fix."""
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(q.name for q in p.iterdir() if q.is_file() and q.name.lower().endswith(WEIGHT_SUFFIXES))
        hint = f"; weights files inside: {found[:5]}" if found else "; it holds no weights file (.pt, .pth, .bin, ...)"
        raise CheckpointError(f"{role} {str(p)!r} is a folder, not a weights file{hint}. Fix: pass the file itself, "
                              f"e.g. {role}='{p / (found[0] if found else 'model_best.pth.tar')}'.")
    if not p.is_file():
        raise FileNotFoundError(f"{role} file {str(p)!r} does not exist; pass an existing weights file (OpenAI's .pt, "
                                "a TeCoA-family .pth.tar, an image-tower or open_clip state dict, or safetensors).")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{role} {str(p)!r} is empty (0 bytes): a failed download or copy. Fix: fetch it again "
                              "and compare its sha256 with the published one.")
    return p


def _corrupt_file_error(path: Path, what: str, exc: BaseException) -> CheckpointError:
    """The error for a file whose container is recognised but cannot be read (truncated or corrupt)."""
    return CheckpointError(f"{str(path)!r} is a {what} that cannot be read: truncated or corrupt "
                           f"({type(exc).__name__}: {str(exc)[:200]}). Fix: download or copy the file again and "
                           "compare its sha256 with the published one.")


def sniff_container(path: Path) -> str:
    """'torchscript', 'torch' or 'safetensors' from the file's first bytes and zip directory; else an error."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise _corrupt_file_error(path, "zip archive (torch.save or TorchScript)", exc) from exc
        inner = [n.split("/", 1)[-1] for n in names]
        if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
            return "torchscript"
        if "data.pkl" in inner:
            return "torch"
        raise CheckpointError(f"{str(path)!r} is a zip archive but neither torch.save's nor a TorchScript archive "
                              f"(entries {names[:4]}). Fix: pass a weights file; recognised: {_FORMAT_LIST}.")
    if head[:1] == b"\x80":  # pickle protocol >= 2: torch.save's legacy (pre-1.6) format
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len + 8 > size:
            short = EOFError(f"header of {header_len} bytes, file {size} bytes")
            raise _corrupt_file_error(path, "safetensors file", short)
        return "safetensors"
    raise CheckpointError(f"{str(path)!r} is not a weights file this project reads (first bytes {head[:8]!r}: not a "
                          f"torch.save file, a TorchScript archive or safetensors). Recognised: {_FORMAT_LIST}. "
                          "Fix: pass one of those (check that the download is not an HTML error page).")


def _numpy_scalar_globals() -> list:
    """Exactly what unpickling a numpy float64 (TeCoA's best_acc1) needs, under numpy 1's and 2's module names."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            type(np.dtype(np.float64))]


def _torch_load(path: Path) -> object:
    """torch.load with weights_only=True (tensors and plain containers, plus numpy float64 for this load)."""
    mmap = zipfile.is_zipfile(path)  # zip files map their storages instead of reading them
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            try:
                return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                return torch.load(str(path), map_location="cpu", weights_only=True)  # an old zip mmap cannot map
    except pickle.UnpicklingError as exc:
        allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
                   for g in _numpy_scalar_globals()}
        try:
            refused = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if g not in allowed]
        except Exception:  # noqa: BLE001 - only for the message
            refused = []
        found = re.search(r"GLOBAL [\w.]+|got <class '[\w.]+'>", str(exc))
        if not refused and found is None:
            raise _corrupt_file_error(path, "torch.save file", exc) from exc
        raise CheckpointError(
            f"{str(path)!r} stores Python objects the safe loader refuses ({refused or found.group(0)}); this project "
            "reads checkpoints with torch.load(weights_only=True): tensors, plain containers and the numpy float64 the "
            "TeCoA family stores. Fix: where you trust the file, re-save its tensors only, e.g. "
            "torch.save(state_dict, 'clean.pt') or safetensors.torch.save_file(state_dict, 'clean.safetensors')."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _corrupt_file_error(path, "torch.save file", exc) from exc


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and its metadata (str -> str); a truncated or corrupt file is an error."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt_file_error(path, "safetensors file", exc) from exc


def _expect_container(path: Path, container: str, role: str) -> Path:
    """path if its sniffed container is `container`; else an error naming the file, what it is, and the fix."""
    found = sniff_container(path)
    if found != container:
        raise CheckpointError(f"{role} {str(path)!r} is a {_CONTAINERS[found]}, not the {_CONTAINERS[container]} "
                              f"expected here. Fix: pass the {role} this project wrote ({_CONTAINERS[container]}).")
    return path


def load_torch_file(path: str | os.PathLike, *, role: str = "checkpoint") -> object:
    """The object a torch.save file holds, read with weights_only=True plus numpy's float64 scalar (the one
    allowance, for the TeCoA family's best_acc1): the package's only torch.load. A missing, empty, folder,
    truncated, non-torch or unsafe file raises an error that names the file, the problem and the fix."""
    return _torch_load(_expect_container(check_weights_path(path, role=role), "torch", role))


def load_safetensors_file(path: str | os.PathLike, *,
                          role: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file: the package's only safetensors read. Bad input raises an error
    that names the file, the problem and the fix (as load_torch_file)."""
    return _read_safetensors(_expect_container(check_weights_path(path, role=role), "safetensors", role))


def _read_object(path: Path, container: str) -> tuple[object, dict[str, str]]:
    """The file's object (a TorchScript state dict, torch.save's object, or safetensors' tensors) and notes."""
    if container == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                module = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            raise _corrupt_file_error(path, "TorchScript archive", exc) from exc
        return dict(module.state_dict()), {}
    if container == "safetensors":
        tensors, meta = _read_safetensors(path)
        return tensors, {f"metadata.{k}": str(v)[:80] for k, v in meta.items()}
    return _torch_load(path), {}


def _is_tensor_map(obj: object) -> bool:
    """True for a non-empty mapping of str -> tensor (a state dict)."""
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """state without `prefix` on its keys when every key carries it (DataParallel's 'module.')."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _detect_state_tower(state: Mapping[str, torch.Tensor]) -> str | None:
    """'full' (both towers, open_clip names), 'image' (an image tower alone, no prefix), or None."""
    has_text = any(k in state for k in _TEXT_KEYS) or any(k.startswith("text.") for k in state)
    has_visual = any(k.startswith("visual.") for k in state)
    if has_text and has_visual:
        return "full"
    looks_visual = any(k in state for k in _VISION_KEYS) or any(k.startswith("trunk.") for k in state)
    if not has_text and not has_visual and looks_visual:
        return "image"
    return None


def _find_prompt_tensors(state: object) -> list[str]:
    """Names of non-empty tensors in a (possibly nested) state dict: prompt parameters that would be needed."""
    if not isinstance(state, Mapping):
        return []
    return [str(k) for k, v in state.items() if isinstance(v, torch.Tensor) and v.numel() > 0]


def _recognise_format(obj: object, path: Path,
                      container: str) -> tuple[str, str, dict[str, torch.Tensor], dict[str, str]]:
    """(format, tower, state dict with open_clip names, info) of a loaded object; else an error naming the fix."""
    where = f"{str(path)!r} ({container})"
    if container == "torchscript":
        state = {k: v for k, v in obj.items() if k not in _OPENAI_SCALARS}
        dropped = sorted(set(obj) - set(state))
        if _detect_state_tower(state) != "full":
            raise CheckpointError(f"{where} is a TorchScript archive but not OpenAI's CLIP (keys {list(state)[:4]}). "
                                  "Fix: pass OpenAI's released archive (e.g. ViT-B-32.pt) or a state dict.")
        return "openai_torchscript", "full", state, {"dropped": ", ".join(dropped)} if dropped else {}
    if isinstance(obj, Mapping) and "vision_encoder_state_dict" in obj:
        vision = obj["vision_encoder_state_dict"]
        if not _is_tensor_map(vision):
            raise CheckpointError(f"{where}: 'vision_encoder_state_dict' is not a state dict of tensors. Fix: pass the "
                                  "checkpoint TeCoA's save_checkpoint wrote (checkpoint.pth.tar / model_best.pth.tar).")
        prompts = _find_prompt_tensors(obj.get("state_dict")) + _find_prompt_tensors(obj.get("add_prompter"))
        if prompts:
            raise CheckpointError(f"{where} is a TeCoA-family checkpoint with a trained visual prompt ({prompts[:4]}); "
                                  "this project applies no prompters. Fix: use a fine-tuning checkpoint (null "
                                  "prompter, empty 'state_dict').")
        info = {k: (f"{float(v):.6g}" if k == "best_acc1" else str(v)) for k, v in obj.items()
                if k in ("epoch", "best_acc1")}
        info["entries"] = ", ".join(sorted(map(str, obj)))
        return "tecoa_family", "image", _strip_prefix(vision, "module."), info
    if isinstance(obj, Mapping) and set(obj) == {"modules", "params"}:
        modules, params = obj["modules"], obj["params"]
        if _find_prompt_tensors(params):
            raise CheckpointError(f"{where} is an AGFT checkpoint of prompt parameters {sorted(params)} (visual "
                                  "prompt tuning), not a fine-tuned image tower; this project applies no prompts. "
                                  "Fix: use AGFT's fine-tuning checkpoint (modules['clip.visual']).")
        if (not isinstance(modules, Mapping) or set(modules) != {"clip.visual"}
                or not _is_tensor_map(modules["clip.visual"])):
            raise CheckpointError(f"{where} looks like AGFT's {{modules, params}} but its modules are "
                                  f"{sorted(modules) if isinstance(modules, Mapping) else type(modules).__name__}, not "
                                  "{'clip.visual': state dict}. Fix: pass the file AGFT's train.py saved.")
        return "agft", "image", dict(modules["clip.visual"]), {"modules": "clip.visual"}
    if isinstance(obj, Mapping) and {"visual", "optimizer", "step"} <= set(obj) and _is_tensor_map(obj["visual"]):
        info = {k: str(obj[k]) for k in ("model_name", "step") if k in obj}
        return "nbhelpers_finetune", "image", dict(obj["visual"]), info
    info: dict[str, str] = {}
    if isinstance(obj, Mapping) and _is_tensor_map(obj.get("state_dict")):
        info = {"entries": ", ".join(sorted(map(str, obj)))}
        obj = obj["state_dict"]  # open_clip's training checkpoint: {epoch, name, state_dict, optimizer}
    if _is_tensor_map(obj):
        state = _strip_prefix(obj, "module.")
        tower = _detect_state_tower(state)
        if tower == "full":
            return "open_clip_full", "full", state, info
        if tower == "image":
            return "image_tower", "image", state, info
        if all(k.startswith("visual.") for k in state):
            return "image_tower", "image", _strip_prefix(state, "visual."), {**info, "prefix": "visual."}
    keys = list(obj)[:6] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{where} holds {keys}, which is none of the recognised formats ({_FORMAT_LIST}). Fix: pass "
                          "one of those, e.g. OpenAI's ViT-B-32.pt, a TeCoA-family model_best.pth.tar, or an "
                          "image-tower state dict.")


def read_checkpoint(path: str | os.PathLike, *, role: str = "checkpoint") -> Checkpoint:
    """Read a weights file of any recognised format safely and say what it is (format, tower, sha256)."""
    p = check_weights_path(path, role=role)
    container = sniff_container(p)
    obj, notes = _read_object(p, container)
    fmt, tower, state, info = _recognise_format(obj, p, container)
    return Checkpoint(str(p), file_fingerprint(p), fmt, container, tower, state, {**notes, **info})


@functools.lru_cache(maxsize=64)
def _detect_tower_cached(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """detect_tower's work, cached per file version (size, mtime and inode are part of the key)."""
    p = Path(path)
    return "full" if sniff_container(p) == "torchscript" else read_checkpoint(p).tower


def detect_tower(path: str | os.PathLike) -> str:
    """'full' or 'image' for a weights file (cached per file version; a TorchScript archive is not even read)."""
    p = check_weights_path(path)
    st = p.stat()
    return _detect_tower_cached(str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def describe_vision(state: Mapping[str, torch.Tensor]) -> dict[str, int] | None:
    """width, layers, patch_size, image_size (and embed_dim) of a ViT image tower's state dict; None otherwise."""
    conv, pos = state.get("conv1.weight"), state.get("positional_embedding")
    if conv is None or pos is None or conv.ndim != 4 or pos.ndim != 2:
        return None
    layers = {k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")}
    grid = round((pos.shape[0] - 1) ** 0.5)
    out = {"width": int(conv.shape[0]), "layers": len(layers), "patch_size": int(conv.shape[-1]),
           "image_size": int(conv.shape[-1]) * grid}
    if isinstance(state.get("proj"), torch.Tensor) and state["proj"].ndim == 2:
        out["embed_dim"] = int(state["proj"].shape[1])
    return out


def find_matching_architectures(vision: Mapping[str, int]) -> list[str]:
    """open_clip architectures whose ViT image tower has these width, layers, patch and image sizes."""
    names = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        vc = cfg.get("vision_cfg", {})
        if "timm_model_name" in vc or not isinstance(vc.get("layers"), int):
            continue
        size = vc.get("image_size")
        size = size[0] if isinstance(size, (list, tuple)) else size
        if (vc.get("width"), vc["layers"], vc.get("patch_size"), size) == (
                vision["width"], vision["layers"], vision["patch_size"], vision["image_size"]) and (
                "embed_dim" not in vision or cfg.get("embed_dim") == vision["embed_dim"]):
            names.append(name)
    return sorted(names, key=lambda n: (len(n), n))


def check_fits(ckpt: Checkpoint, expected: Mapping[str, torch.Size], *, model: str, role: str = "checkpoint") -> None:
    """Raise CheckpointError unless ckpt's keys and shapes are exactly `expected` (an architecture's state dict
    shapes: the full model's, or the image tower's for an image-tower file): names the file, its detected format,
    the first offending keys, the architecture the file fits, and the fix."""
    missing = [k for k in expected if k not in ckpt.state_dict]
    unexpected = [k for k in ckpt.state_dict if k not in expected]
    wrong = [f"{k} {tuple(ckpt.state_dict[k].shape)} vs {tuple(expected[k])}" for k in expected
             if k in ckpt.state_dict and tuple(ckpt.state_dict[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return

    def first(items: list[str]) -> str:
        """The first four items and how many more."""
        return f"{items[:4]}" + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")

    parts = [f"missing keys {first(missing)}" if missing else "",
             f"unexpected keys {first(unexpected)}" if unexpected else "",
             f"shapes file vs model {first(wrong)}" if wrong else ""]
    vision_state = ckpt.state_dict if ckpt.tower == "image" else {
        k[len("visual."):]: v for k, v in ckpt.state_dict.items() if k.startswith("visual.")}
    vision = describe_vision(vision_state)
    fix = (f"pass model=<the architecture the file was made for>, or a {model} checkpoint in one of the "
           "recognised formats (nbhelpers.checkpoints.FORMATS)")
    held = ""
    if vision is not None:
        archs = find_matching_architectures(vision)
        held = (f" The file holds a ViT image tower of width {vision['width']}, {vision['layers']} layers, patch "
                f"{vision['patch_size']}, {vision['image_size']} px"
                + (f" (open_clip: {', '.join(archs[:3])})" if archs else "") + ".")
        if archs and model not in archs:
            fix = f"pass model='{archs[0]}' (the architecture the file was made for), or a {model} checkpoint"
        elif model in archs:
            fix = (f"the tower's sizes are {model}'s but its keys are not those of any recognised format; re-save it "
                   "as a plain state dict of the model (open_clip key names) or pass the file the peer released")
    raise CheckpointError(f"{role} {ckpt.path!r}, detected as {ckpt.format} ({FORMATS[ckpt.format]}; {ckpt.tower} "
                          f"tower), does not fit open_clip {model!r}: " + "; ".join(p for p in parts if p) + "." + held
                          + f" Fix: {fix}.")
