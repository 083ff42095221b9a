"""Fail early, with a clear message, when torch and torchvision do not belong together."""
from __future__ import annotations


class BrokenTorchPairError(ImportError):
    """torch and torchvision are installed but cannot work together."""


def check_torch_pair() -> None:
    """Raise BrokenTorchPairError if torchvision's compiled operators cannot be used with this torch."""
    try:
        import torch
        import torchvision
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BrokenTorchPairError(
            f"nbhelpers needs torch and torchvision ({exc}). Run `make venv` (or see docs/SETUP.md)."
        ) from exc
    try:
        torch.ops.torchvision.nms  # noqa: B018 - resolving the op is the check
    except (RuntimeError, AttributeError) as exc:
        raise BrokenTorchPairError(
            f"torch {torch.__version__} and torchvision {torchvision.__version__} do not match: torchvision's "
            f"operators cannot be loaded ({exc}). This happens when a locally built CPU-only torch (for example "
            "the 2.13.0+cpu wheel on our machines) is paired with torchvision from PyPI. Install the pair pinned "
            "in requirements/torch.txt: `pip install -r requirements/torch.txt` (or recreate the venv with `make venv`)."
        ) from exc
