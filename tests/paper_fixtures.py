"""Writers of tiny paper-scale datasets in the exact on-disk layouts torchvision reads (nothing is downloaded).

Used by tests/test_paper_data.py (one dataset per test) and tests/test_paper_profile.py (a whole data root that
the six notebooks run on). CIFAR's files are the real pickled batches, but their md5 sums cannot match the
official archives': loaders need ``TIMA_SKIP_CHECKSUMS=1`` (:data:`nbhelpers.paper_data.SKIP_CHECKSUMS_ENV`) or
a patched ``torchvision.datasets.cifar.check_integrity`` to read them.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_FAKE_IMAGENET = 1000
FAKE_WNIDS = [f"n{i:08d}" for i in range(N_FAKE_IMAGENET)]  # sorted, so index i <-> IMAGENET_CLASSNAMES[i]


def write_image(path: Path, *, size: tuple[int, int] = (12, 10), mode: str = "RGB", seed: int = 0) -> None:
    """Write a small random image (PNG or JPEG by suffix) in the given PIL mode; size is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(path)


def write_pickle(path: Path, obj: object) -> None:
    """Pickle obj to path, creating the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def cifar_batch(n: int, label_key: str, n_classes: int, seed: int) -> dict:
    """A CIFAR python batch: ``data`` uint8 (n, 3072) in CHW-planar order and labels cycling over the classes."""
    data = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    return {"data": data, label_key: [i % n_classes for i in range(n)]}


def write_cifar10(root: Path, test_batch: dict, names: list[str]) -> None:
    """<root>/cifar-10-batches-py/: data_batch_1..5 (2 images each; torchvision checks they exist even for the test
    split), the given test_batch and batches.meta with the label names."""
    base = root / "cifar-10-batches-py"
    for i in range(1, 6):
        write_pickle(base / f"data_batch_{i}", cifar_batch(2, "labels", len(names), seed=i))
    write_pickle(base / "test_batch", test_batch)
    write_pickle(base / "batches.meta", {"label_names": names})


def write_imagenet_meta(imagenet_dir: Path) -> None:
    """torchvision's ImageNet ``meta.bin``, ``(wnid_to_classes, val_wnids)`` saved with torch.save, for the 1000
    fake wnids (what maps TinyImageNet's wnid folders to open_clip's ImageNet class names)."""
    imagenet_dir.mkdir(parents=True, exist_ok=True)
    wnid_to_classes = {w: (f"synset {i}",) for i, w in enumerate(FAKE_WNIDS)}
    torch.save((wnid_to_classes, []), imagenet_dir / "meta.bin")


def write_class_folders(split_dir: Path, wnids: list[str], per_class: int = 2, *, size: tuple[int, int] = (12, 10),
                        suffix: str = ".png") -> None:
    """An ImageFolder split: split_dir/<wnid>/img_<k><suffix>, per_class random images per class."""
    for c, wnid in enumerate(wnids):
        for k in range(per_class):
            write_image(split_dir / wnid / f"img_{k}{suffix}", size=size, seed=10 * c + k)


def write_paper_root(root: Path, *, cifar_test: int = 40, cifar_classes: int = 10, tiny_classes: int = 2,
                     tiny_train_per_class: int = 2, tiny_val_per_class: int = 1,
                     eurosat_classes: tuple[str, ...] = ("AnnualCrop", "SeaLake")) -> Path:
    """A data root holding cifar10 (real pickle layout, cifar_test test images over the first cifar_classes
    names), tinyimagenet (64 px JPEG class folders, train and val, wnids mapped to ImageNet names through a
    fake <root>/imagenet/meta.bin) and eurosat (2750/<Class>/*.jpg); returns root."""
    if not 1 <= cifar_classes <= len(CIFAR10_NAMES):
        raise ValueError(f"cifar_classes must be in [1, {len(CIFAR10_NAMES)}], got {cifar_classes}")
    names = CIFAR10_NAMES[:cifar_classes]
    write_cifar10(root, cifar_batch(cifar_test, "labels", len(names), seed=42), names)
    write_imagenet_meta(root / "imagenet")
    wnids = FAKE_WNIDS[1:1 + tiny_classes]
    write_class_folders(root / "tinyimagenet" / "train", wnids, tiny_train_per_class, size=(64, 64), suffix=".JPEG")
    write_class_folders(root / "tinyimagenet" / "val", wnids, tiny_val_per_class, size=(64, 64), suffix=".JPEG")
    for c, folder in enumerate(eurosat_classes):
        write_image(root / "eurosat" / "2750" / folder / f"{folder}_1.jpg", size=(64, 64), seed=100 + c)
    return root
