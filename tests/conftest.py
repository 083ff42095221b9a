"""Shared fixtures: quiet progress bars, a small thread count, the committed mini CLIP."""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The paper fixtures (tests/paper_fixtures.py) are small by design: the session loads them as partial data
# (paper_data.ALLOW_PARTIAL_ENV); the tests of the completeness check remove the allowance (monkeypatch.delenv).
os.environ["TIMA_ALLOW_PARTIAL_DATA"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from nbhelpers import paths  # noqa: E402
from nbhelpers.models import create_model_and_transforms  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked gpu run only where CUDA is available; elsewhere they are skipped with the reason."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="marked gpu: needs CUDA, and torch.cuda.is_available() is False here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mini_model():
    """The committed, trained mini CLIP (eval mode, CPU)."""
    assert paths.MINI_CHECKPOINT.is_file(), "checkpoints/mini_clip.safetensors is missing: run `make pretrain`"
    model, _ = create_model_and_transforms("mini", device="cpu")
    return model


@pytest.fixture(scope="session")
def objects_head(mini_model):
    """Zero-shot head of the mini CLIP on the 64-class 'objects' task."""
    from nbhelpers import world
    from nbhelpers.zeroshot import build_class_embeddings, build_head

    names = world.TASKS["objects"].classnames()
    return build_head(mini_model, build_class_embeddings(mini_model, names, [world.PROMPT_TEMPLATE]), classnames=names)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
