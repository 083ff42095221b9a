"""Tests for nbhelpers.paper_data on tiny fake datasets written to tmp_path in the real on-disk formats.

Nothing is downloaded: every test writes the files torchvision reads and runs the real loading code.
"""
from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from nbhelpers import data
from nbhelpers.paper_data import (
    PAPER_DATASETS,
    SKIP_CHECKSUMS_ENV,
    TEMPLATE,
    TinyImageNetVal,
    available_paper_datasets,
    check_dataset_files,
    dataset_labels,
    diagnose_data_root,
    get_classnames,
    country_names,
    list_paper_datasets,
    list_validation_datasets,
    load_paper_dataset,
    template_for,
)
from paper_fixtures import FAKE_WNIDS, FIXTURE_WRITERS, cifar_batch, label_of, write_cifar10, write_class_folders
from paper_fixtures import write_fixture, write_image, write_imagenet_meta, write_paper_root, write_pickle
from paper_fixtures import write_fer2013_fixture, write_imagenet_devkit, write_tinyimagenet_official

TO_TENSOR = transforms.ToTensor()


# ----------------------------------------------------------------------------------------------- helpers


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


def test_cifar10_loads_real_format(tmp_path: Path, skip_cifar_md5: None) -> None:
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batch = cifar_batch(5, "labels", 10, seed=42)
    batch["labels"] = [3, 0, 9, 1, 5]
    write_cifar10(tmp_path, batch, names)

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
    write_cifar10(tmp_path, cifar_batch(2, "labels", 10, seed=0), names)
    # Without the md5 bypass torchvision raises "Dataset not found or corrupted": we re-raise it with the hint.
    with pytest.raises(FileNotFoundError, match="cifar10.*torchvision: Dataset not found or corrupted") as info:
        load_paper_dataset("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "test_batch") in str(info.value)


def test_skip_checksums_env_reads_fake_cifar_with_real_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["airplane", "automobile", "bird"]
    batch = cifar_batch(4, "labels", 3, seed=7)
    write_cifar10(tmp_path, batch, names)
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")

    dataset, classnames = load_paper_dataset("cifar10", root=tmp_path, transform=TO_TENSOR)

    assert isinstance(dataset, torchvision.datasets.CIFAR10) and classnames == names
    expected = torch.from_numpy(batch["data"][2].reshape(3, 32, 32).astype(np.float32) / 255.0)
    torch.testing.assert_close(dataset[2][0], expected)
    clone = pickle.loads(pickle.dumps(dataset))  # the existence-checked subclass pickles (DataLoader workers)
    torch.testing.assert_close(clone[2][0], expected)
    # A missing file is still caught before torchvision runs, with the hint.
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_paper_dataset("cifar10", root=tmp_path)


def test_skip_checksums_env_must_be_0_or_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path, cifar_batch(2, "labels", 3, seed=0), ["a", "b", "c"])
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "yes")
    with pytest.raises(ValueError, match="TIMA_SKIP_CHECKSUMS must be '0' or '1'"):
        load_paper_dataset("cifar10", root=tmp_path)


def test_skip_checksums_off_still_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path, cifar_batch(2, "labels", 10, seed=0), [f"class{i}" for i in range(10)])
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "0")
    with pytest.raises(FileNotFoundError, match="Dataset not found or corrupted"):
        load_paper_dataset("cifar10", root=tmp_path)


def test_available_datasets_and_file_checks_on_a_fixture_root(tmp_path: Path) -> None:
    write_paper_root(tmp_path, cifar_test=4, cifar_classes=3)
    assert available_paper_datasets(tmp_path) == ["cifar10", "eurosat", "tinyimagenet"]
    assert available_paper_datasets(tmp_path, split="train") == ["cifar10", "tinyimagenet"]
    check_dataset_files("tinyimagenet", root=tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="stl10_binary"):
        check_dataset_files("stl10", root=tmp_path)
    with pytest.raises(ValueError, match="allowed: all"):
        check_dataset_files("eurosat", root=tmp_path, split="train")
    _, names = load_paper_dataset("tinyimagenet", root=tmp_path, split="train")
    assert names == ["goldfish", "great white shark"]  # wnids mapped through the fixture's imagenet/meta.bin


def test_cifar100_loads_real_format(tmp_path: Path, skip_cifar_md5: None) -> None:
    names = ["apple", "aquarium_fish", "baby", "maple_tree"]
    base = tmp_path / "cifar-100-python"
    write_pickle(base / "train", cifar_batch(3, "fine_labels", len(names), seed=1))
    write_pickle(base / "test", cifar_batch(6, "fine_labels", len(names), seed=2))
    write_pickle(base / "meta", {"fine_label_names": names, "coarse_label_names": ["fruit", "fish", "people", "trees"]})

    dataset, classnames = load_paper_dataset("cifar100", root=tmp_path, transform=TO_TENSOR)

    assert len(dataset) == 6
    assert classnames == ["apple", "aquarium fish", "baby", "maple tree"]
    for i in range(len(dataset)):
        _assert_image_sample(dataset[i], len(classnames), hw=(32, 32))
    train, _ = load_paper_dataset("cifar100", root=tmp_path, split="train")
    assert len(train) == 3


# -------------------------------------------------------------------------------- ImageFolder: ImageNet


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
    write_imagenet_meta(imagenet_dir)
    wnids = [FAKE_WNIDS[0], FAKE_WNIDS[1], FAKE_WNIDS[999]]
    write_class_folders(imagenet_dir / "val", wnids)

    dataset, classnames = load_paper_dataset("imagenet", root=tmp_path, transform=TO_TENSOR)

    assert isinstance(dataset, torchvision.datasets.ImageNet)
    assert len(dataset) == 6
    assert classnames == ["tench", "goldfish", IMAGENET_CLASSNAMES[999]]
    labels = sorted(dataset[i][1] for i in range(len(dataset)))
    assert labels == [0, 0, 1, 1, 2, 2]
    _assert_image_sample(dataset[0], len(classnames), hw=(10, 12))


def test_imagenet_devkit_archive_gives_the_wnid_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ILSVRC2012_devkit_t12.tar.gz (as downloaded) and val/ class folders, torchvision's ImageNet parses the
    devkit into meta.bin and the names follow the wnid order of its meta.mat. The fake archive cannot match the
    official md5, so torchvision's archive check is bypassed here (a corrupted real archive is reported instead)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    imagenet_dir = tmp_path / "imagenet"
    write_imagenet_devkit(imagenet_dir)
    write_class_folders(imagenet_dir / "val", [FAKE_WNIDS[0], FAKE_WNIDS[7]], per_class=1)
    with pytest.raises(FileNotFoundError, match="(?s)imagenet: could not read.*corrupted"):
        load_paper_dataset("imagenet", root=tmp_path)  # md5 checked: the fake archive is refused, with the hint
    monkeypatch.setattr(torchvision.datasets.imagenet, "_verify_archive", lambda root, file, md5: None)

    dataset, classnames = load_paper_dataset("imagenet", root=tmp_path, transform=TO_TENSOR)

    assert isinstance(dataset, torchvision.datasets.ImageNet) and (imagenet_dir / "meta.bin").is_file()
    assert dataset.wnids == [FAKE_WNIDS[0], FAKE_WNIDS[7]] and dataset.classes[1] == ("synset 7", "other name")
    assert classnames == [IMAGENET_CLASSNAMES[0], IMAGENET_CLASSNAMES[7]]


def test_imagenet_subset_without_wnid_list_warns_and_uses_wnids(tmp_path: Path) -> None:
    wnids = ["n01440764", "n01443537"]
    write_class_folders(tmp_path / "imagenet" / "val", wnids, per_class=1)
    with pytest.warns(UserWarning, match="no ImageNet wnid list"):
        dataset, classnames = load_paper_dataset("imagenet", root=tmp_path, transform=TO_TENSOR)
    assert isinstance(dataset, torchvision.datasets.ImageFolder)
    assert classnames == wnids
    _assert_image_sample(dataset[1], 2)


# ---------------------------------------------------------------------------- ImageFolder: TinyImageNet


def test_tinyimagenet_maps_wnids_through_imagenet_meta(tmp_path: Path) -> None:
    write_imagenet_meta(tmp_path / "imagenet")
    write_class_folders(tmp_path / "tinyimagenet" / "val", [FAKE_WNIDS[1], FAKE_WNIDS[2]], per_class=2)
    write_class_folders(tmp_path / "tinyimagenet" / "train", [FAKE_WNIDS[1], FAKE_WNIDS[2]], per_class=3)

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
    write_class_folders(tmp_path / "tinyimagenet" / "val", [FAKE_WNIDS[0], FAKE_WNIDS[3]], per_class=1)
    dataset, classnames = load_paper_dataset("tinyimagenet", root=tmp_path)
    assert classnames == ["tench", get_classnames("imagenet")[3]]
    assert isinstance(dataset[0][0], Image.Image)  # no transform: PIL images come out


def test_tinyimagenet_without_imagenet_falls_back_to_wnids(tmp_path: Path) -> None:
    wnids = ["n01443537", "n01629819", "n01641577"]
    write_class_folders(tmp_path / "tinyimagenet" / "val", wnids, per_class=1)
    with pytest.warns(UserWarning, match="falling back to the wnid folder names"):
        dataset, classnames = load_paper_dataset("tinyimagenet", root=tmp_path, transform=TO_TENSOR)
    assert classnames == wnids
    assert len(dataset) == 3


# ------------------------------------------------------------------------------ EuroSAT and Caltech101


def test_eurosat_image_folder(tmp_path: Path) -> None:
    # EuroSAT's only check is that <root>/eurosat/2750 exists, so a fake passes honestly.
    folders = ["AnnualCrop", "HerbaceousVegetation", "SeaLake"]
    for c, folder in enumerate(folders):
        write_image(tmp_path / "eurosat" / "2750" / folder / f"{folder}_1.jpg", size=(16, 16), seed=c)

    dataset, classnames = load_paper_dataset("eurosat", root=tmp_path, transform=TO_TENSOR)

    assert classnames == ["annual crop", "herbaceous vegetation", "sea lake"]
    assert len(dataset) == 3
    assert sorted(dataset[i][1] for i in range(3)) == [0, 1, 2]
    _assert_image_sample(dataset[2], 3, hw=(16, 16))


def test_caltech101_grayscale_becomes_rgb(tmp_path: Path) -> None:
    # Caltech101's only check is that 101_ObjectCategories exists; BACKGROUND_Google is dropped by torchvision.
    base = tmp_path / "caltech101" / "101_ObjectCategories"
    write_image(base / "BACKGROUND_Google" / "image_0001.jpg")
    write_image(base / "Faces_easy" / "image_0001.jpg", mode="L")  # grayscale, as some real images are
    write_image(base / "accordion" / "image_0001.jpg")
    write_image(base / "accordion" / "image_0002.jpg", mode="L")

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


def test_pcam_without_h5py_gives_clear_import_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` raises ImportError, as when it is not installed
    (tmp_path / "pcam").mkdir()
    for xy in ("x", "y"):
        (tmp_path / "pcam" / f"camelyonpatch_level_2_split_test_{xy}.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ImportError, match="pip install h5py"):
        load_paper_dataset("pcam", root=tmp_path)


def test_fixed_classnames_need_no_files() -> None:
    assert get_classnames("pcam") == ["healthy lymph node tissue", "lymph node tumor tissue"]
    flowers = get_classnames("flowers102")
    assert len(flowers) == 102 and flowers[0] == "pink primrose"
    with pytest.raises(ValueError, match="pass dataset= or root="):
        get_classnames("cifar10")


# ------------------------------------------------------------------------ the sixteen datasets, as downloaded


def _needs(name: str) -> None:
    """Skip (with the reason) what this machine cannot read: pcam without the optional h5py."""
    if name == "pcam":
        pytest.importorskip("h5py", reason="pcam's .h5 files need the optional h5py (pip install -e '.[paper]')")


def test_every_paper_dataset_has_a_fixture_writer() -> None:
    assert list(FIXTURE_WRITERS) == list(PAPER_DATASETS) == list_paper_datasets() + list_validation_datasets()


COUNTED_BY_THE_DOCTOR = ("imagenet", "caltech101", "caltech256", "eurosat", "country211")


@pytest.mark.parametrize("name", list(PAPER_DATASETS))
def test_each_paper_dataset_reads_from_its_downloaded_layout(tmp_path: Path, name: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The real loader reads each dataset from the files its archive provides: class names after clean-up, class
    count, item count, and every image paired with its own label (the fixture writes class k's images at grey
    level class_value(k, i), so label_of(image) must equal the label the loader gives)."""
    _needs(name)
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")  # CIFAR, STL-10, Flowers102, SVHN and FER2013 md5-check their files
    fixture = write_fixture(name, tmp_path)

    check_dataset_files(name, root=tmp_path)
    (status,) = diagnose_data_root(tmp_path, datasets=[name])
    if name in COUNTED_BY_THE_DOCTOR:  # a class-folder layout: the doctor counts its few classes (issue 30, item 4)
        assert status.status == "incomplete" and f"{len(fixture.classnames)} of " in status.problems[0]
    else:
        assert status.status == "found"
    dataset, classnames = load_paper_dataset(name, root=tmp_path, transform=TO_TENSOR)

    assert classnames == fixture.classnames and len(classnames) == len(fixture.classnames)
    assert len(dataset) == fixture.size
    items = [dataset[i] for i in range(len(dataset))]
    labels = [label for _, label in items]
    assert sorted(labels) == sorted(fixture.labels)
    for image, label in items:
        _assert_image_sample((image, label), len(classnames))
        assert label_of(image) == label, f"{name}: an image of class {label_of(image)} came out labelled {label}"
    assert dataset_labels(dataset) == labels  # the labels sampling uses, read without decoding images
    if name == "imagenet":  # without a dataset object: open_clip's 1000 names, those of the full validation set
        assert get_classnames(name, root=tmp_path)[:2] == classnames[:2]
    else:
        assert get_classnames(name, root=tmp_path) == classnames


@pytest.mark.parametrize("name", list(PAPER_DATASETS))
def test_each_paper_dataset_through_load_eval_set(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.load_eval_set(profile="paper") on each fixture: all items (n above the size), names, labels, sampling."""
    _needs(name)
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    fixture = write_fixture(name, tmp_path)
    small = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])

    ev = data.load_eval_set("paper", name, n=fixture.size + 5, data_root=tmp_path, preprocess=small)

    assert len(ev) == fixture.size and ev.images.shape == (fixture.size, 3, 8, 8)
    assert ev.classnames == fixture.classnames and ev.templates == [template_for(name)]
    assert ev.templates == (["A photo I took in {}."] if name == "country211" else [TEMPLATE])
    assert sorted(ev.labels.tolist()) == sorted(fixture.labels)
    assert [label_of(x) for x in ev.images] == ev.labels.tolist()
    assert ev.sampling == "random+partial"  # the fixtures are small: partial data, allowed for the test session
    assert sorted(ev.indices) == list(range(fixture.size)) and ev.sample_seed == 0


@pytest.mark.parametrize("name", ["cifar10", "stl10", "flowers102", "svhn", "fer2013"])
def test_md5_checked_datasets_still_check_without_the_switch(tmp_path: Path, name: str) -> None:
    """Fixture bytes cannot match the official md5 sums: without TIMA_SKIP_CHECKSUMS torchvision refuses them, and
    the error names the files and where to get the dataset."""
    write_fixture(name, tmp_path)
    with pytest.raises(FileNotFoundError, match="not found (in .* )?or corrupted") as info:
        load_paper_dataset(name, root=tmp_path)
    assert PAPER_DATASETS[name].source in str(info.value)


def test_sun397_order_does_not_depend_on_the_file_system(tmp_path: Path) -> None:
    """torchvision lists SUN397 with rglob (file-system order); the loader sorts by path, so indices are stable."""
    write_fixture("sun397", tmp_path)
    dataset, _ = load_paper_dataset("sun397", root=tmp_path)
    paths = [str(p) for p in dataset._image_files]
    assert paths == sorted(paths)
    assert dataset_labels(dataset) == [0, 0, 1, 1, 2, 2]  # class paths sort like ClassName.txt here


# ---------------------------------------------------------------------------- TinyImageNet's official layout


def test_tinyimagenet_official_layout_under_tinyimagenet_folder_is_not_one_class(tmp_path: Path) -> None:
    """The official zip's contents put in <root>/tinyimagenet/: val/ was once read by ImageFolder as one class
    ("images"), every label the same. Now val_annotations.txt gives each image its class."""
    write_imagenet_meta(tmp_path / "imagenet")
    wnids = [FAKE_WNIDS[3], FAKE_WNIDS[1], FAKE_WNIDS[2]]
    labels = write_tinyimagenet_official(tmp_path, wnids, folder="tinyimagenet")

    val, names = load_paper_dataset("tinyimagenet", root=tmp_path, transform=TO_TENSOR)

    assert isinstance(val, TinyImageNetVal)
    assert names == [get_classnames("imagenet")[i] for i in (1, 2, 3)]  # sorted wnids
    got = [val[i][1] for i in range(len(val))]
    assert got == labels and len(set(got)) == 3
    assert [label_of(val[i][0]) for i in range(len(val))] == got
    train, train_names = load_paper_dataset("tinyimagenet", root=tmp_path, split="train", transform=TO_TENSOR)
    assert isinstance(train, torchvision.datasets.ImageFolder) and train.classes == val.classes
    assert train_names == names and len(train) == 6
    assert all(label_of(train[i][0]) == train[i][1] for i in range(len(train)))  # train/<wnid>/images/ walked
    clone = pickle.loads(pickle.dumps(val))  # DataLoader workers
    torch.testing.assert_close(clone[1][0], val[1][0])


def test_tinyimagenet_prefers_tinyimagenet_folder_over_the_zip_folder(tmp_path: Path) -> None:
    write_imagenet_meta(tmp_path / "imagenet")
    write_tinyimagenet_official(tmp_path, [FAKE_WNIDS[1], FAKE_WNIDS[2]])  # <root>/tiny-imagenet-200/
    write_class_folders(tmp_path / "tinyimagenet" / "val", [FAKE_WNIDS[5]], per_class=1)
    dataset, names = load_paper_dataset("tinyimagenet", root=tmp_path)
    assert isinstance(dataset, torchvision.datasets.ImageFolder) and names == [get_classnames("imagenet")[5]]


def test_tinyimagenet_official_without_imagenet_uses_words_txt(tmp_path: Path) -> None:
    words = {"n01443537": "goldfish, Carassius auratus",
             "n01484850": "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"}
    write_tinyimagenet_official(tmp_path, list(words), words=words)
    with pytest.warns(UserWarning, match="first synonyms of .*words.txt"):
        _, names = load_paper_dataset("tinyimagenet", root=tmp_path)
    assert names == ["goldfish", "great white shark"]
    with pytest.warns(UserWarning, match="words.txt"):
        assert get_classnames("tinyimagenet", root=tmp_path) == names


def test_tinyimagenet_official_val_without_annotations_is_incomplete(tmp_path: Path) -> None:
    write_tinyimagenet_official(tmp_path, [FAKE_WNIDS[1], FAKE_WNIDS[2]])
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    with pytest.raises(FileNotFoundError, match="tinyimagenet: incomplete") as info:
        load_paper_dataset("tinyimagenet", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt") in message
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in message


def test_tinyimagenet_annotations_naming_unknown_wnids_are_refused(tmp_path: Path) -> None:
    write_tinyimagenet_official(tmp_path, [FAKE_WNIDS[1], FAKE_WNIDS[2]])
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_9.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"n09999999.*wnids.txt"):
        TinyImageNetVal(annotations.parent)


# ------------------------------------------------------------- missing or incomplete data: errors before any work

# Per dataset, a file of its layout to remove (or a folder to empty) to make it incomplete.
_BREAK = {
    "cifar10": "cifar-10-batches-py/data_batch_3", "cifar100": "cifar-100-python/meta",
    "stl10": "stl10_binary/test_y.bin", "imagenet": "imagenet/val",
    "caltech101": "caltech101/101_ObjectCategories/*", "caltech256": "caltech256/256_ObjectCategories/*",
    "oxfordpet": "oxford-iiit-pet/annotations/test.txt", "flowers102": "flowers-102/setid.mat",
    "fgvc_aircraft": "fgvc-aircraft-2013b/data/images_variant_test.txt",
    "stanfordcars": "stanford_cars/cars_test_annos_withlabels.mat", "sun397": "SUN397/ClassName.txt",
    "food101": "food-101/meta/test.json", "eurosat": "eurosat/2750/*", "dtd": "dtd/dtd/labels/test1.txt",
    "pcam": "pcam/camelyonpatch_level_2_split_test_y.h5",
    "tinyimagenet": "tiny-imagenet-200/val/val_annotations.txt",
    "gtsrb": "gtsrb/GT-final_test.csv", "svhn": "svhn/test_32x32.mat", "fer2013": "fer2013/fer2013.csv",
    "country211": "country211/test/*",
}


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _never_called(image: object) -> torch.Tensor:
    raise AssertionError("an image was read before the data check")


def test_every_dataset_has_a_way_to_break_it() -> None:
    assert sorted(_BREAK) == sorted(PAPER_DATASETS)


@pytest.mark.parametrize("name", list(PAPER_DATASETS))
def test_incomplete_dataset_fails_before_any_work(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset folder that lacks a file (or whose image folder is empty) fails in load_eval_set before any image
    is read, saying "incomplete", naming the file and where to get the dataset; the doctor agrees."""
    _needs(name)
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    write_fixture(name, tmp_path)
    target = _BREAK[name]
    if target.endswith("/*"):
        broken = tmp_path / target[:-2]
        for child in list(broken.iterdir()):
            _remove(child)
    else:
        broken = tmp_path / target
        _remove(broken)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=f"{name}: incomplete: ") as info:
        data.load_eval_set("paper", name, n=4, data_root=tmp_path, preprocess=_never_called)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert str(broken) in message and PAPER_DATASETS[name].source in message and PAPER_DATASETS[name].hint in message
    if target.endswith("/*"):
        assert "empty folder" in message
    (status,) = diagnose_data_root(tmp_path, datasets=[name])
    assert status.status == "incomplete" and any(p.startswith(str(broken)) for p in status.problems)


def test_missing_dataset_fails_in_load_eval_set_before_any_work(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    write_fixture("cifar10", tmp_path)  # another dataset is there; dtd is not
    with pytest.raises(FileNotFoundError, match="dtd: not found: ") as info:
        data.load_eval_set("paper", "dtd", n=4, data_root=tmp_path, preprocess=_never_called)
    message = str(info.value)
    assert str(tmp_path / "dtd" / "dtd" / "labels" / "test1.txt") in message
    assert "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz" in message
    assert "torchvision.datasets.DTD" in message


# ------------------------------------------------------------------------- 06's validation datasets (paper study)


def test_validation_datasets_are_outside_the_reported_sixteen() -> None:
    """GTSRB, SVHN, FER2013 and Country211 serve 06's selection only: none is a reported dataset, every list of the
    reported ones leaves them out, and none of their class names (every country pycountry knows) is a class name of
    a reported dataset whose names need no files (ImageNet's 1000, so TinyImageNet's too, Flowers102, PCAM) or of
    CIFAR-10."""
    validation = list_validation_datasets()
    assert validation == ["gtsrb", "svhn", "fer2013", "country211"]
    assert not set(validation) & set(list_paper_datasets()) and len(list_paper_datasets()) == 16
    assert all(PAPER_DATASETS[n].role == "validation" for n in validation)
    reported = {n.lower() for name in ("imagenet", "flowers102", "pcam") for n in get_classnames(name)}
    reported |= set(FIXTURE_WRITERS["cifar10"].__globals__["CIFAR10_NAMES"])
    names = [n.lower() for name in ("gtsrb", "svhn", "fer2013") for n in get_classnames(name)]
    import pycountry

    names += [n.lower() for n in country_names([c.alpha_2 for c in pycountry.countries] + ["XK"])]
    assert not set(names) & reported


def test_gtsrb_names_follow_its_class_ids() -> None:
    """Ours: one name per GTSRB ClassId (0-42), in ClassId order; spot checks against the dataset's documentation."""
    names = get_classnames("gtsrb")
    assert len(names) == len(set(names)) == 43 and all(n.endswith(" sign") for n in names)
    expected = {0: "speed limit 20 km/h sign", 6: "end of speed limit 80 km/h sign", 8: "speed limit 120 km/h sign",
                13: "yield sign", 14: "stop sign", 17: "no entry sign", 25: "road work sign",
                40: "roundabout mandatory sign", 42: "end of no passing for vehicles over 3.5 tons sign"}
    assert {k: names[k] for k in expected} == expected
    assert get_classnames("svhn")[0] == "number 0" and len(get_classnames("svhn")) == 10
    assert get_classnames("fer2013")[4] == "face looking sad"  # FER2013's label 4 is sad (6 is neutral)


def test_country211_names_come_from_pycountry() -> None:
    """Every ISO 3166 alpha-2 code pycountry knows, and Kosovo's XK, gets a distinct name (so no two Country211
    classes share a prompt); common names where pycountry has them; an unknown folder is refused."""
    import pycountry

    codes = [c.alpha_2 for c in pycountry.countries] + ["XK"]
    names = country_names(codes)
    assert len(set(names)) == len(codes) > 240
    assert country_names(["BO", "XK", "FR"]) == ["Bolivia", "Kosovo", "France"]
    with pytest.raises(ValueError, match="ZZ"):
        country_names(["ZZ"])


def test_fer2013_reads_kaggles_file_and_refuses_label_less_test_csv(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Kaggle's icml_face_data.csv (columns with leading spaces) gives the same test split as fer2013.csv; test.csv
    alone has no labels and is reported as incomplete before torchvision reads it."""
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    fixture = write_fer2013_fixture(tmp_path / "kaggle", icml=True)
    dataset, names = load_paper_dataset("fer2013", root=tmp_path / "kaggle", transform=TO_TENSOR)
    assert names == fixture.classnames and [dataset[i][1] for i in range(len(dataset))] == fixture.labels
    assert all(label_of(dataset[i][0]) == dataset[i][1] for i in range(len(dataset)))
    assert dataset[0][0].shape == (3, 48, 48)  # grey faces come out as RGB
    (tmp_path / "bare" / "fer2013").mkdir(parents=True)
    (tmp_path / "bare" / "fer2013" / "test.csv").write_text("pixels\n" + " ".join(["0"] * 48 * 48) + "\n")
    with pytest.raises(FileNotFoundError, match=r"fer2013: incomplete: .*fer2013\.csv.*icml_face_data\.csv"):
        load_paper_dataset("fer2013", root=tmp_path / "bare")
