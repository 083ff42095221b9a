"""Tests for nbhelpers.paper_data on tiny fake datasets written to tmp_path in the real on-disk formats.

Nothing is downloaded: every test writes the files torchvision reads and runs the real loading code.
"""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from nbhelpers.paper_data import (
    PAPER_DATASETS,
    TEMPLATE,
    get_classnames,
    list_paper_datasets,
    load_paper_dataset,
)

TO_TENSOR = transforms.ToTensor()


# ----------------------------------------------------------------------------------------------- helpers


def _write_image(path: Path, *, size: tuple[int, int] = (12, 10), mode: str = "RGB", seed: int = 0) -> None:
    """Write a small random image (PNG or JPEG by suffix) in the given PIL mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(path)


def _pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_batch(n: int, label_key: str, n_classes: int, seed: int) -> dict:
    """A CIFAR python batch: ``data`` uint8 (n, 3072) in CHW-planar order and integer labels."""
    data = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    return {"data": data, label_key: [i % n_classes for i in range(n)]}


@pytest.fixture
def skip_cifar_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torchvision's CIFAR integrity checks test existence only.

    CIFAR10/100 call ``torchvision.datasets.cifar.check_integrity(path, md5)`` for every batch (in
    ``_check_integrity``) and for the meta file (in ``_load_meta``) against the md5 sums of the real
    archives, which fake files cannot match. Patching that module-level function covers both call sites and
    leaves the rest of the real loading code (unpickling, reshaping, PIL conversion) under test.
    """
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def _assert_image_sample(sample: tuple, n_classes: int, *, hw: tuple[int, int] | None = None) -> torch.Tensor:
    image, label = sample
    assert isinstance(image, torch.Tensor)
    assert image.dtype == torch.float32
    assert image.ndim == 3 and image.shape[0] == 3
    if hw is not None:
        assert tuple(image.shape[1:]) == hw
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert isinstance(label, int) and 0 <= label < n_classes
    return image


# ------------------------------------------------------------------------------------------------- specs


def test_list_paper_datasets() -> None:
    expected = [
        "cifar10", "cifar100", "stl10", "imagenet", "caltech101", "caltech256", "oxfordpet", "flowers102",
        "fgvc_aircraft", "stanfordcars", "sun397", "food101", "eurosat", "dtd", "pcam", "tinyimagenet",
    ]
    assert sorted(list_paper_datasets()) == sorted(expected)
    zero_shot = list_paper_datasets(zero_shot_only=True)
    assert len(zero_shot) == 15
    assert "tinyimagenet" not in zero_shot
    assert PAPER_DATASETS["tinyimagenet"].zero_shot is False
    assert all(PAPER_DATASETS[n].name == n for n in expected)


def test_template_is_tecoa_single_template() -> None:
    assert TEMPLATE.format("cat") == "This is a photo of a cat"


def test_unknown_name_lists_allowed_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown paper dataset 'mnist'") as info:
        load_paper_dataset("mnist", root=tmp_path)
    for name in ("cifar10", "tinyimagenet", "fgvc_aircraft"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="cifar10"):
        get_classnames("mnist")


def test_unknown_split_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed: all"):
        load_paper_dataset("eurosat", root=tmp_path, split="test")


@pytest.mark.parametrize("name", list(PAPER_DATASETS))
def test_missing_files_raise_quickly_with_path_and_hint(tmp_path: Path, name: str) -> None:
    spec = PAPER_DATASETS[name]
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        load_paper_dataset(name, root=tmp_path)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert elapsed < 2.0
    assert name in message
    assert str(tmp_path / spec.subdir) in message
    assert spec.hint in message
    # Nothing was created under the root (torchvision's Caltech classes would makedirs on construction).
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------- CIFAR


def _write_cifar10(root: Path, test_batch: dict, names: list[str]) -> None:
    base = root / "cifar-10-batches-py"
    for i in range(1, 6):  # torchvision checks the train batches exist even for the test split
        _pickle(base / f"data_batch_{i}", _cifar_batch(2, "labels", len(names), seed=i))
    _pickle(base / "test_batch", test_batch)
    _pickle(base / "batches.meta", {"label_names": names})


def test_cifar10_loads_real_format(tmp_path: Path, skip_cifar_md5: None) -> None:
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batch = _cifar_batch(5, "labels", 10, seed=42)
    batch["labels"] = [3, 0, 9, 1, 5]
    _write_cifar10(tmp_path, batch, names)

    dataset, classnames = load_paper_dataset("cifar10", root=tmp_path, transform=TO_TENSOR)

    assert len(dataset) == 5
    assert classnames == names
    image = _assert_image_sample(dataset[0], len(classnames), hw=(32, 32))
    expected = torch.from_numpy(batch["data"][0].reshape(3, 32, 32).astype(np.float32) / 255.0)
    torch.testing.assert_close(image, expected)
    assert [dataset[i][1] for i in range(5)] == [3, 0, 9, 1, 5]
    assert classnames[dataset[0][1]] == "cat"


def test_cifar10_md5_mismatch_becomes_file_not_found(tmp_path: Path) -> None:
    names = [f"class{i}" for i in range(10)]
    _write_cifar10(tmp_path, _cifar_batch(2, "labels", 10, seed=0), names)
    # Without the md5 bypass torchvision raises "Dataset not found or corrupted": we re-raise it with the hint.
    with pytest.raises(FileNotFoundError, match="cifar10.*torchvision: Dataset not found or corrupted") as info:
        load_paper_dataset("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in str(info.value)


def test_cifar100_loads_real_format(tmp_path: Path, skip_cifar_md5: None) -> None:
    names = ["apple", "aquarium_fish", "baby", "maple_tree"]
    base = tmp_path / "cifar-100-python"
    _pickle(base / "train", _cifar_batch(3, "fine_labels", len(names), seed=1))
    _pickle(base / "test", _cifar_batch(6, "fine_labels", len(names), seed=2))
    _pickle(base / "meta", {"fine_label_names": names, "coarse_label_names": ["fruit", "fish", "people", "trees"]})

    dataset, classnames = load_paper_dataset("cifar100", root=tmp_path, transform=TO_TENSOR)

    assert len(dataset) == 6
    assert classnames == ["apple", "aquarium fish", "baby", "maple tree"]
    for i in range(len(dataset)):
        _assert_image_sample(dataset[i], len(classnames), hw=(32, 32))
    train, _ = load_paper_dataset("cifar100", root=tmp_path, split="train")
    assert len(train) == 3


# -------------------------------------------------------------------------------- ImageFolder: ImageNet


N_FAKE_IMAGENET = 1000
FAKE_WNIDS = [f"n{i:08d}" for i in range(N_FAKE_IMAGENET)]  # sorted, so index i <-> IMAGENET_CLASSNAMES[i]


def _write_imagenet_meta(imagenet_dir: Path) -> None:
    """torchvision's ImageNet ``meta.bin``: ``(wnid_to_classes, val_wnids)`` saved with torch.save."""
    imagenet_dir.mkdir(parents=True, exist_ok=True)
    wnid_to_classes = {w: (f"synset {i}",) for i, w in enumerate(FAKE_WNIDS)}
    torch.save((wnid_to_classes, []), imagenet_dir / "meta.bin")


def _write_class_folders(split_dir: Path, wnids: list[str], per_class: int = 2) -> None:
    for c, wnid in enumerate(wnids):
        for k in range(per_class):
            _write_image(split_dir / wnid / f"img_{k}.png", seed=10 * c + k)


def test_imagenet_classnames_come_from_open_clip() -> None:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = get_classnames("imagenet")
    assert len(names) == 1000
    assert names[0] == "tench"
    assert names == list(IMAGENET_CLASSNAMES)


def test_full_imagenet_folder_keeps_open_clip_order(tmp_path: Path) -> None:
    # A dataset with all 1000 (sorted) wnid classes: label i is the i-th name of open_clip's list.
    full = SimpleNamespace(classes=list(FAKE_WNIDS), root=str(tmp_path / "imagenet" / "val"))
    names = get_classnames("imagenet", full)
    assert names == get_classnames("imagenet")


def test_imagenet_subset_with_meta_uses_torchvision_imagenet(tmp_path: Path) -> None:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    imagenet_dir = tmp_path / "imagenet"
    _write_imagenet_meta(imagenet_dir)
    wnids = [FAKE_WNIDS[0], FAKE_WNIDS[1], FAKE_WNIDS[999]]
    _write_class_folders(imagenet_dir / "val", wnids)

    dataset, classnames = load_paper_dataset("imagenet", root=tmp_path, transform=TO_TENSOR)

    assert isinstance(dataset, torchvision.datasets.ImageNet)
    assert len(dataset) == 6
    assert classnames == ["tench", "goldfish", IMAGENET_CLASSNAMES[999]]
    labels = sorted(dataset[i][1] for i in range(len(dataset)))
    assert labels == [0, 0, 1, 1, 2, 2]
    _assert_image_sample(dataset[0], len(classnames), hw=(10, 12))


def test_imagenet_subset_without_wnid_list_warns_and_uses_wnids(tmp_path: Path) -> None:
    wnids = ["n01440764", "n01443537"]
    _write_class_folders(tmp_path / "imagenet" / "val", wnids, per_class=1)
    with pytest.warns(UserWarning, match="no ImageNet wnid list"):
        dataset, classnames = load_paper_dataset("imagenet", root=tmp_path, transform=TO_TENSOR)
    assert isinstance(dataset, torchvision.datasets.ImageFolder)
    assert classnames == wnids
    _assert_image_sample(dataset[1], 2)


# ---------------------------------------------------------------------------- ImageFolder: TinyImageNet


def test_tinyimagenet_maps_wnids_through_imagenet_meta(tmp_path: Path) -> None:
    _write_imagenet_meta(tmp_path / "imagenet")
    _write_class_folders(tmp_path / "tinyimagenet" / "val", [FAKE_WNIDS[1], FAKE_WNIDS[2]], per_class=2)
    _write_class_folders(tmp_path / "tinyimagenet" / "train", [FAKE_WNIDS[1], FAKE_WNIDS[2]], per_class=3)

    dataset, classnames = load_paper_dataset("tinyimagenet", root=tmp_path, transform=TO_TENSOR)

    assert len(dataset) == 4
    assert classnames == ["goldfish", "great white shark"]
    for i in range(len(dataset)):
        _assert_image_sample(dataset[i], 2, hw=(10, 12))
    train, train_names = load_paper_dataset("tinyimagenet", root=tmp_path, split="train")
    assert len(train) == 6 and train_names == classnames
    assert get_classnames("tinyimagenet", root=tmp_path) == classnames


def test_tinyimagenet_maps_wnids_through_full_imagenet_val_folder(tmp_path: Path) -> None:
    # 1000 wnid folders in <root>/imagenet/val are enough to recover the index order (no files needed).
    for wnid in FAKE_WNIDS:
        (tmp_path / "imagenet" / "val" / wnid).mkdir(parents=True)
    _write_class_folders(tmp_path / "tinyimagenet" / "val", [FAKE_WNIDS[0], FAKE_WNIDS[3]], per_class=1)
    dataset, classnames = load_paper_dataset("tinyimagenet", root=tmp_path)
    assert classnames == ["tench", get_classnames("imagenet")[3]]
    assert isinstance(dataset[0][0], Image.Image)  # no transform: PIL images come out


def test_tinyimagenet_without_imagenet_falls_back_to_wnids(tmp_path: Path) -> None:
    wnids = ["n01443537", "n01629819", "n01641577"]
    _write_class_folders(tmp_path / "tinyimagenet" / "val", wnids, per_class=1)
    with pytest.warns(UserWarning, match="falling back to the wnid folder names"):
        dataset, classnames = load_paper_dataset("tinyimagenet", root=tmp_path, transform=TO_TENSOR)
    assert classnames == wnids
    assert len(dataset) == 3


# ------------------------------------------------------------------------------ EuroSAT and Caltech101


def test_eurosat_image_folder(tmp_path: Path) -> None:
    # EuroSAT's only check is that <root>/eurosat/2750 exists, so a fake passes honestly.
    folders = ["AnnualCrop", "HerbaceousVegetation", "SeaLake"]
    for c, folder in enumerate(folders):
        _write_image(tmp_path / "eurosat" / "2750" / folder / f"{folder}_1.jpg", size=(16, 16), seed=c)

    dataset, classnames = load_paper_dataset("eurosat", root=tmp_path, transform=TO_TENSOR)

    assert classnames == ["annual crop", "herbaceous vegetation", "sea lake"]
    assert len(dataset) == 3
    assert sorted(dataset[i][1] for i in range(3)) == [0, 1, 2]
    _assert_image_sample(dataset[2], 3, hw=(16, 16))


def test_caltech101_grayscale_becomes_rgb(tmp_path: Path) -> None:
    # Caltech101's only check is that 101_ObjectCategories exists; BACKGROUND_Google is dropped by torchvision.
    base = tmp_path / "caltech101" / "101_ObjectCategories"
    _write_image(base / "BACKGROUND_Google" / "image_0001.jpg")
    _write_image(base / "Faces_easy" / "image_0001.jpg", mode="L")  # grayscale, as some real images are
    _write_image(base / "accordion" / "image_0001.jpg")
    _write_image(base / "accordion" / "image_0002.jpg", mode="L")

    dataset, classnames = load_paper_dataset("caltech101", root=tmp_path, transform=TO_TENSOR)

    assert classnames == ["centered face", "accordion"]
    assert len(dataset) == 3
    for i in range(len(dataset)):
        _assert_image_sample(dataset[i], 2, hw=(10, 12))
    raw, _ = load_paper_dataset("caltech101", root=tmp_path)  # no transform: RGB PIL images
    assert raw[0][0].mode == "RGB"
    # The RGB wrapper must survive pickling (DataLoader workers under the spawn start method).
    clone = pickle.loads(pickle.dumps(dataset))
    torch.testing.assert_close(clone[0][0], dataset[0][0])


# ------------------------------------------------------------------------------------------------ PCAM


def test_pcam_without_h5py_gives_clear_import_error(tmp_path: Path) -> None:
    try:
        import h5py  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("h5py is installed")
    (tmp_path / "pcam").mkdir()
    for xy in ("x", "y"):
        (tmp_path / "pcam" / f"camelyonpatch_level_2_split_test_{xy}.h5").write_bytes(b"")
    with pytest.raises(ImportError, match="pip install h5py"):
        load_paper_dataset("pcam", root=tmp_path)


def test_fixed_classnames_need_no_files() -> None:
    assert get_classnames("pcam") == ["healthy lymph node tissue", "lymph node tumor tissue"]
    flowers = get_classnames("flowers102")
    assert len(flowers) == 102 and flowers[0] == "pink primrose"
    with pytest.raises(ValueError, match="pass dataset= or root="):
        get_classnames("cifar10")
