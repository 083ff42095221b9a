"""Writers of tiny paper-scale datasets in the exact on-disk layouts torchvision reads (nothing is downloaded).

Used by tests/test_paper_data.py (each of the 16 reported datasets and 06's four validation datasets,
:data:`FIXTURE_WRITERS`) and tests/test_paper_profile.py
(a whole data root that the six notebooks run on). CIFAR's, STL-10's and Flowers102's files are in the real formats,
but their md5 sums cannot match the official archives': loaders need ``TIMA_SKIP_CHECKSUMS=1``
(:data:`nbhelpers.paper_data.SKIP_CHECKSUMS_ENV`) or a patched ``check_integrity`` to read them.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
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
                     eurosat_classes: tuple[str, ...] = ("AnnualCrop", "SeaLake"), eurosat_per_class: int = 1) -> Path:
    """A data root holding cifar10 (real pickle layout, cifar_test test images over the first cifar_classes
    names), tinyimagenet (64 px JPEG class folders, train and val, wnids mapped to ImageNet names through a
    fake <root>/imagenet/meta.bin) and eurosat (2750/<Class>/*.jpg, eurosat_per_class each); returns root."""
    if not 1 <= cifar_classes <= len(CIFAR10_NAMES):
        raise ValueError(f"cifar_classes must be in [1, {len(CIFAR10_NAMES)}], got {cifar_classes}")
    names = CIFAR10_NAMES[:cifar_classes]
    write_cifar10(root, cifar_batch(cifar_test, "labels", len(names), seed=42), names)
    write_imagenet_meta(root / "imagenet")
    wnids = FAKE_WNIDS[1:1 + tiny_classes]
    write_class_folders(root / "tinyimagenet" / "train", wnids, tiny_train_per_class, size=(64, 64), suffix=".JPEG")
    write_class_folders(root / "tinyimagenet" / "val", wnids, tiny_val_per_class, size=(64, 64), suffix=".JPEG")
    for c, folder in enumerate(eurosat_classes):
        for k in range(1, eurosat_per_class + 1):
            write_image(root / "eurosat" / "2750" / folder / f"{folder}_{k}.jpg", size=(64, 64),
                        seed=100 + c if k == 1 else 1000 * (c + 1) + k)
    return root


# ------------------------------------------------------------------ the sixteen paper datasets, as downloaded
#
# One writer per dataset: the files its official archive (or torchvision's download) puts under the data root,
# with real file names, split files and metadata formats, but a few tiny images per class. Every image of class k
# is a flat grey of value class_value(k, i) (i: its index within the class), so a test can check that a loader
# pairs each image with the right label. Class folders and names are real ones of each dataset unless a comment says.


@dataclass(frozen=True)
class Fixture:
    """What a dataset writer put under the root: the class names the loader must return (after clean-up, indexed by
    label), the number of items of the evaluation split and the labels those items carry."""

    name: str
    classnames: list[str]
    size: int
    labels: list[int]


def class_value(label: int, i: int = 0) -> int:
    """The grey level of image i of class `label` (labels up to 10, i up to 9)."""
    return 20 + 20 * label + i


def label_of(image: torch.Tensor) -> int:
    """The class whose grey level the image (float tensor in [0, 1]) carries (inverse of class_value)."""
    return int(round((float(image.mean()) * 255 - 20) / 20 - 0.2))


def write_flat(path: Path, value: int, *, size: tuple[int, int] = (16, 12), mode: str = "RGB") -> None:
    """A flat image of the given grey value (PNG or JPEG by suffix); size is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * 3).save(path)


def _cifar_flat_batch(labels: list[int], label_key: str) -> dict:
    """A CIFAR python batch whose image j is flat at class_value(labels[j], j // n_classes)."""
    data = np.stack([np.full(3072, class_value(y, j // max(1, max(labels) + 1)), dtype=np.uint8)
                     for j, y in enumerate(labels)])
    return {"data": data, label_key: list(labels), "filenames": [f"img_{j}.png" for j in range(len(labels))]}


def write_cifar10_fixture(root: Path) -> Fixture:
    """cifar-10-batches-py/ with 12 test images over the 10 real classes (batches.meta's label_names)."""
    labels = [j % 10 for j in range(12)]
    write_cifar10(root, _cifar_flat_batch(labels, "labels"), CIFAR10_NAMES)
    return Fixture("cifar10", list(CIFAR10_NAMES), 12, labels)


def write_cifar100_fixture(root: Path) -> Fixture:
    """cifar-100-python/{train,test,meta}: 4 of the real fine classes (names with underscores) in meta."""
    names = ["apple", "aquarium_fish", "maple_tree", "willow_tree"]
    base = root / "cifar-100-python"
    labels = [0, 1, 2, 3, 3, 2, 1, 0]
    write_pickle(base / "train", _cifar_flat_batch([0, 1], "fine_labels") | {"coarse_labels": [0, 1]})
    write_pickle(base / "test", _cifar_flat_batch(labels, "fine_labels") | {"coarse_labels": labels})
    write_pickle(base / "meta", {"fine_label_names": names, "coarse_label_names": ["fruit", "fish", "trees", "trees"]})
    return Fixture("cifar100", ["apple", "aquarium fish", "maple tree", "willow tree"], len(labels), labels)


STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _stl10_images(labels: list[int]) -> bytes:
    """STL-10's binary image format: uint8 (N, 3, 96, 96), column-major per channel (flat images don't care)."""
    return np.stack([np.full((3, 96, 96), class_value(y, j // 10), dtype=np.uint8)
                     for j, y in enumerate(labels)]).tobytes()


def write_stl10_fixture(root: Path) -> Fixture:
    """stl10_binary/: {train,test}_{X,y}.bin (labels 1-based uint8), unlabeled_X.bin, class_names.txt,
    fold_indices.txt; torchvision md5-checks the .bin files (TIMA_SKIP_CHECKSUMS=1)."""
    base = root / "stl10_binary"
    base.mkdir(parents=True, exist_ok=True)
    labels = [3, 0, 9, 5, 3]
    (base / "test_X.bin").write_bytes(_stl10_images(labels))
    (base / "test_y.bin").write_bytes(bytes(y + 1 for y in labels))
    (base / "train_X.bin").write_bytes(_stl10_images([1, 2]))
    (base / "train_y.bin").write_bytes(bytes([2, 3]))
    (base / "unlabeled_X.bin").write_bytes(_stl10_images([0]))
    (base / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n")
    (base / "fold_indices.txt").write_text("\n".join("0 1" for _ in range(10)) + "\n")
    return Fixture("stl10", list(STL10_NAMES), len(labels), labels)


def write_imagenet_fixture(root: Path) -> Fixture:
    """imagenet/meta.bin (torchvision's, made from the devkit) and val/<wnid>/ILSVRC2012_val_*.JPEG for the 1st, 2nd
    and last of the 1000 (fake, sorted) wnids: names come from open_clip's list by wnid index."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    imagenet_dir = root / "imagenet"
    write_imagenet_meta(imagenet_dir)
    picked = [0, 1, 999]
    labels = []
    for label, w in enumerate(picked):
        for i in range(2):
            write_flat(imagenet_dir / "val" / FAKE_WNIDS[w] / f"ILSVRC2012_val_{10 * w + i + 1:08d}.JPEG",
                       class_value(label, i))
            labels.append(label)
    return Fixture("imagenet", [IMAGENET_CLASSNAMES[w] for w in picked], len(labels), labels)


def write_caltech101_fixture(root: Path) -> Fixture:
    """caltech101/101_ObjectCategories/<category>/image_NNNN.jpg with BACKGROUND_Google (dropped by torchvision),
    the two face folders (renamed as in CLIP's evaluation) and a grayscale image, as some real ones are."""
    base = root / "caltech101" / "101_ObjectCategories"
    write_flat(base / "BACKGROUND_Google" / "image_0001.jpg", 255)
    folders = ["Faces", "Faces_easy", "Leopards", "accordion"]  # sorted as torchvision sorts them
    labels = []
    for label, folder in enumerate(folders):
        for i in range(2):
            write_flat(base / folder / f"image_{i + 1:04d}.jpg", class_value(label, i), mode="L" if i else "RGB")
            labels.append(label)
    return Fixture("caltech101", ["off-center face", "centered face", "leopards", "accordion"], len(labels), labels)


def write_caltech256_fixture(root: Path) -> Fixture:
    """caltech256/256_ObjectCategories/NNN.name/NNN_NNNN.jpg. torchvision rebuilds each file name from the folder's
    sorted position, so the folders are numbered from 001 without gaps: the first three real categories and a
    '-101' one (faces-easy-101, really 253) numbered 004 here."""
    base = root / "caltech256" / "256_ObjectCategories"
    folders = ["001.ak47", "002.american-flag", "003.backpack", "004.faces-easy-101"]
    labels = []
    for label, folder in enumerate(folders):
        for i in range(2):
            write_flat(base / folder / f"{label + 1:03d}_{i + 1:04d}.jpg", class_value(label, i),
                       mode="L" if label == 1 and i == 1 else "RGB")
            labels.append(label)
    return Fixture("caltech256", ["ak47", "american flag", "backpack", "faces easy"], len(labels), labels)


def write_oxfordpet_fixture(root: Path) -> Fixture:
    """oxford-iiit-pet/images/<Breed>_<n>.jpg and annotations/{test,trainval}.txt ('<image> <class> <species>
    <breed id>', class ids 1-based, cat breeds capitalised) for the first four real breeds."""
    base = root / "oxford-iiit-pet"
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("american_pit_bull_terrier", 2), ("basset_hound", 2)]
    test_lines, train_lines, labels = [], [], []
    for label, (breed, species) in enumerate(breeds):
        for i in range(2):
            image_id = f"{breed}_{100 + i}"
            write_flat(base / "images" / f"{image_id}.jpg", class_value(label, i))
            test_lines.append(f"{image_id} {label + 1} {species} {label + 1}")
            labels.append(label)
        write_flat(base / "images" / f"{breed}_1.jpg", class_value(label))
        train_lines.append(f"{breed}_1 {label + 1} {species} {label + 1}")
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    (base / "annotations" / "test.txt").write_text("\n".join(test_lines) + "\n")
    (base / "annotations" / "trainval.txt").write_text("\n".join(train_lines) + "\n")
    names = ["abyssinian", "american bulldog", "american pit bull terrier", "basset hound"]
    return Fixture("oxfordpet", names, len(labels), labels)


def write_flowers102_fixture(root: Path) -> Fixture:
    """flowers-102/jpg/image_NNNNN.jpg, imagelabels.mat ('labels', 1-based, 1 x N) and setid.mat (trnid, valid,
    tstid); torchvision md5-checks the two .mat files (TIMA_SKIP_CHECKSUMS=1). Names: torchvision's 102."""
    from scipy.io import savemat
    from torchvision.datasets import Flowers102

    base = root / "flowers-102"
    image_labels = [1, 2, 3, 1, 2, 3, 1, 2, 3, 3]  # image_00001 .. image_00010
    for image_id, y in enumerate(image_labels, 1):
        write_flat(base / "jpg" / f"image_{image_id:05d}.jpg", class_value(y - 1, image_id // 3))
    savemat(base / "imagelabels.mat", {"labels": np.array([image_labels], dtype=np.uint8)})
    tstid = [4, 5, 6, 7, 8, 9, 10]
    sets = {"trnid": [1, 2], "valid": [3, 10], "tstid": tstid}
    savemat(base / "setid.mat", {key: np.array([ids], dtype=np.uint16) for key, ids in sets.items()})
    names = [" ".join(c.lower().replace("-", " ").replace("_", " ").split()) for c in Flowers102.classes]
    return Fixture("flowers102", names, len(tstid), [image_labels[i - 1] - 1 for i in tstid])


def write_fgvc_aircraft_fixture(root: Path) -> Fixture:
    """fgvc-aircraft-2013b/data/: images/<7-digit id>.jpg, variants.txt (class order) and
    images_variant_{test,trainval}.txt ('<id> <variant>')."""
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "727-200", "737-200", "F-16A/B"]
    data.mkdir(parents=True, exist_ok=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    test_lines, labels = [], []
    for label, variant in enumerate(variants):
        for i in range(2):
            image_id = f"{1025794 + 10 * label + i:07d}"
            write_flat(data / "images" / f"{image_id}.jpg", class_value(label, i))
            test_lines.append(f"{image_id} {variant}")
            labels.append(label)
    (data / "images_variant_test.txt").write_text("\n".join(test_lines) + "\n")
    (data / "images_variant_trainval.txt").write_text("\n".join(test_lines[:2]) + "\n")
    return Fixture("fgvc_aircraft", ["707 320", "727 200", "737 200", "f 16a/b"], len(labels), labels)


def write_stanfordcars_fixture(root: Path) -> Fixture:
    """stanford_cars/ as torchvision 0.29 reads it: devkit/cars_meta.mat ('class_names', 1 x K cell),
    cars_test_annos_withlabels.mat ('annotations', 1 x N struct: bbox_x1..y2, class (1-based), fname) and
    cars_test/NNNNN.jpg, for the first three real classes."""
    from scipy.io import savemat

    base = root / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]
    cells = np.empty((1, len(names)), dtype=object)
    cells[0, :] = names
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": cells})
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    labels = [0, 1, 2, 2, 1, 0]
    annotations = np.zeros((1, len(labels)), dtype=[(f, object) for f in fields])
    for j, y in enumerate(labels):
        fname = f"{j + 1:05d}.jpg"
        write_flat(base / "cars_test" / fname, class_value(y, j // 3))
        annotations[0, j] = (np.uint8(1), np.uint8(1), np.uint8(15), np.uint8(11), np.uint8(y + 1), fname)
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": annotations})
    return Fixture("stanfordcars", [n.lower() for n in names], len(labels), labels)


def write_sun397_fixture(root: Path) -> Fixture:
    """SUN397/ClassName.txt ('/a/abbey', ...) and SUN397/<letter>/<class path>/sun_<id>.jpg for three real classes,
    one with a two-level path."""
    base = root / "SUN397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    base.mkdir(parents=True, exist_ok=True)
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    labels = []
    for label, path in enumerate(classes):
        for i, stem in enumerate(("aqsnbtllbbsrbkna", "bzmjrgqgzawpgcvd")):
            write_flat(base / path.lstrip("/") / f"sun_{stem}.jpg", class_value(label, i))
            labels.append(label)
    return Fixture("sun397", ["abbey", "apartment building outdoor", "bakery shop"], len(labels), labels)


def write_food101_fixture(root: Path) -> Fixture:
    """food-101/images/<class>/<id>.jpg and meta/{test,train}.json ({class: ['<class>/<id>', ...]}), classes.txt,
    labels.txt, for the first three real classes."""
    import json

    base = root / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "beef_carpaccio"]
    test: dict[str, list[str]] = {}
    labels = []
    for label, cls in enumerate(classes):
        test[cls] = []
        for i in range(2):
            image_id = f"{1011328 + 7 * label + i}"
            write_flat(base / "images" / cls / f"{image_id}.jpg", class_value(label, i))
            test[cls].append(f"{cls}/{image_id}")
            labels.append(label)
    (base / "meta").mkdir(parents=True, exist_ok=True)
    (base / "meta" / "test.json").write_text(json.dumps(test))
    (base / "meta" / "train.json").write_text(json.dumps({cls: items[:1] for cls, items in test.items()}))
    (base / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    (base / "meta" / "labels.txt").write_text("\n".join(c.replace("_", " ").capitalize() for c in classes) + "\n")
    return Fixture("food101", ["apple pie", "baby back ribs", "beef carpaccio"], len(labels), labels)


def write_eurosat_fixture(root: Path) -> Fixture:
    """eurosat/2750/<Class>/<Class>_<n>.jpg (64 px, as the RGB release) for four real classes."""
    folders = ["AnnualCrop", "Forest", "HerbaceousVegetation", "SeaLake"]
    labels = []
    for label, folder in enumerate(folders):
        for i in range(2):
            write_flat(root / "eurosat" / "2750" / folder / f"{folder}_{i + 1}.jpg", class_value(label, i),
                       size=(64, 64))
            labels.append(label)
    return Fixture("eurosat", ["annual crop", "forest", "herbaceous vegetation", "sea lake"], len(labels), labels)


def write_dtd_fixture(root: Path) -> Fixture:
    """dtd/dtd/images/<class>/<class>_NNNN.jpg and dtd/dtd/labels/{test,train,val}1.txt ('<class>/<file>')."""
    data = root / "dtd" / "dtd"
    classes = ["banded", "blotchy", "braided", "bubbly"]
    lines, labels = [], []
    for label, cls in enumerate(classes):
        for i in range(2):
            fname = f"{cls}_{i + 2:04d}.jpg"
            write_flat(data / "images" / cls / fname, class_value(label, i))
            lines.append(f"{cls}/{fname}")
            labels.append(label)
    (data / "labels").mkdir(parents=True, exist_ok=True)
    (data / "labels" / "test1.txt").write_text("\n".join(lines) + "\n")
    (data / "labels" / "train1.txt").write_text("\n".join(lines[::2]) + "\n")
    (data / "labels" / "val1.txt").write_text("\n".join(lines[1::2]) + "\n")
    return Fixture("dtd", list(classes), len(labels), labels)


def write_pcam_fixture(root: Path) -> Fixture:
    """pcam/camelyonpatch_level_2_split_test_{x,y}.h5: 'x' uint8 (N, 96, 96, 3) and 'y' uint8 (N, 1, 1, 1), the
    decompressed official files (needs h5py)."""
    import h5py

    base = root / "pcam"
    base.mkdir(parents=True, exist_ok=True)
    labels = [0, 1, 1, 0, 1]
    x = np.stack([np.full((96, 96, 3), class_value(y, j // 2), dtype=np.uint8) for j, y in enumerate(labels)])
    with h5py.File(base / "camelyonpatch_level_2_split_test_x.h5", "w") as f:
        f.create_dataset("x", data=x)
    with h5py.File(base / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
        f.create_dataset("y", data=np.array(labels, dtype=np.uint8).reshape(-1, 1, 1, 1))
    return Fixture("pcam", ["healthy lymph node tissue", "lymph node tumor tissue"], len(labels), labels)


def write_tinyimagenet_official(root: Path, wnids: list[str], *, per_class: int = 2,
                                words: dict[str, str] | None = None, folder: str = "tiny-imagenet-200") -> list[int]:
    """<root>/<folder>/ as tiny-imagenet-200.zip extracts: wnids.txt (unsorted), words.txt, train/<wnid>/images/
    <wnid>_<k>.JPEG + <wnid>_boxes.txt, val/images/val_<k>.JPEG + val/val_annotations.txt, test/images/.
    Val images are interleaved over the classes; returns their labels (index in the sorted wnids)."""
    base = root / folder
    base.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")
    words = words or {w: f"synset {w}, other name" for w in wnids}
    (base / "words.txt").write_text("".join(f"{w}\t{text}\n" for w, text in {"n00001740": "entity", **words}.items()))
    order = sorted(wnids)
    for w in wnids:
        label = order.index(w)
        for k in range(per_class):
            write_flat(base / "train" / w / "images" / f"{w}_{k}.JPEG", class_value(label, k), size=(64, 64))
        (base / "train" / w / f"{w}_boxes.txt").write_text("".join(f"{w}_{k}.JPEG\t0\t0\t63\t63\n"
                                                                   for k in range(per_class)))
    lines, labels = [], []
    for k in range(per_class * len(wnids)):
        w = wnids[k % len(wnids)]
        label = order.index(w)
        write_flat(base / "val" / "images" / f"val_{k}.JPEG", class_value(label, k // len(wnids)), size=(64, 64))
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
        labels.append(label)
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    write_flat(base / "test" / "images" / "test_0.JPEG", 0, size=(64, 64))
    return labels


def write_tinyimagenet_fixture(root: Path) -> Fixture:
    """TinyImageNet in its official layout (<root>/tiny-imagenet-200/) over two of the (fake) ImageNet wnids, named
    through <root>/imagenet/meta.bin as on a real run."""
    write_imagenet_meta(root / "imagenet")
    wnids = [FAKE_WNIDS[2], FAKE_WNIDS[1]]
    labels = write_tinyimagenet_official(root, wnids)
    return Fixture("tinyimagenet", ["goldfish", "great white shark"], len(labels), labels)


# ------------------------------------------------------------------ 06's validation datasets, as downloaded


def write_gtsrb_fixture(root: Path) -> Fixture:
    """gtsrb/ as torchvision's download extracts GTSRB_Final_Test_Images.zip and GTSRB_Final_Test_GT.zip:
    GTSRB/Final_Test/Images/NNNNN.ppm and GT-final_test.csv ('Filename;Width;Height;Roi.X1;...;ClassId', ';'-separated)
    over ClassIds 0-3. Names: paper_data's 43 (ours; tests/test_paper_data.py checks them against the ClassIds)."""
    from nbhelpers.paper_data import get_classnames

    base = root / "gtsrb"
    labels = [2, 0, 3, 1, 0, 2]
    lines = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for j, y in enumerate(labels):
        write_flat(base / "GTSRB" / "Final_Test" / "Images" / f"{j:05d}.ppm", class_value(y, j // 4), size=(31, 33))
        lines.append(f"{j:05d}.ppm;31;33;5;5;26;28;{y}")
    (base / "GT-final_test.csv").write_text("\n".join(lines) + "\n")
    return Fixture("gtsrb", get_classnames("gtsrb"), len(labels), labels)


def write_svhn_fixture(root: Path) -> Fixture:
    """svhn/test_32x32.mat as SVHN's site ships it (format 2): 'X' uint8 (32, 32, 3, N), 'y' (N, 1) with the digit 0
    stored as 10 (torchvision maps it to 0); torchvision md5-checks the file (TIMA_SKIP_CHECKSUMS=1)."""
    from scipy.io import savemat

    digits = [1, 0, 3, 2, 0, 1]
    x = np.stack([np.full((32, 32, 3), class_value(d, j // 4), dtype=np.uint8) for j, d in enumerate(digits)], axis=-1)
    (root / "svhn").mkdir(parents=True, exist_ok=True)
    savemat(root / "svhn" / "test_32x32.mat", {"X": x, "y": np.array([[d or 10] for d in digits], dtype=np.uint8)})
    return Fixture("svhn", [f"number {k}" for k in range(10)], len(digits), digits)


FER2013_NAMES = ["face looking angry", "face looking disgusted", "face looking fearful", "face looking happy",
                 "face looking sad", "face looking surprised", "face looking neutral"]


def write_fer2013_fixture(root: Path, *, icml: bool = False) -> Fixture:
    """fer2013/fer2013.csv (from fer2013.tar.gz: 'emotion,pixels,Usage'; 48 x 48 grey pixels as text) with Training,
    PublicTest and PrivateTest rows; the test split is the two test usages in file order. icml: Kaggle's
    icml_face_data.csv instead ('emotion, Usage, pixels', with the spaces). torchvision md5-checks the file."""
    base = root / "fer2013"
    base.mkdir(parents=True, exist_ok=True)
    rows = [(3, "Training"), (0, "PublicTest"), (6, "PublicTest"), (1, "Training"), (3, "PrivateTest"),
            (0, "PrivateTest")]
    labels = [y for y, usage in rows if usage != "Training"]
    lines = ["emotion, Usage, pixels" if icml else "emotion,pixels,Usage"]
    for j, (y, usage) in enumerate(rows):
        pixels = " ".join([str(class_value(y, j // 4))] * (48 * 48))
        lines.append(f"{y},{usage},{pixels}" if icml else f"{y},{pixels},{usage}")
    (base / ("icml_face_data.csv" if icml else "fer2013.csv")).write_text("\n".join(lines) + "\n")
    return Fixture("fer2013", list(FER2013_NAMES), len(labels), labels)


def write_country211_fixture(root: Path) -> Fixture:
    """country211/{test,valid}/<ISO code>/<id>.jpg as country211.tgz extracts, for four real folders: a plain name,
    one whose official ISO name has a comma (KR), one kept with its comma (VG) and Kosovo (XK, not ISO 3166)."""
    codes = ["AD", "KR", "VG", "XK"]
    labels = []
    for label, code in enumerate(codes):
        for i in range(2):
            write_flat(root / "country211" / "test" / code / f"{1000 * label + i}.jpg", class_value(label, i))
            labels.append(label)
        write_flat(root / "country211" / "valid" / code / f"{1000 * label + 9}.jpg", class_value(label))
    return Fixture("country211", ["Andorra", "South Korea", "Virgin Islands, British", "Kosovo"], len(labels), labels)


FIXTURE_WRITERS: dict[str, Callable[[Path], Fixture]] = {
    "cifar10": write_cifar10_fixture,
    "cifar100": write_cifar100_fixture,
    "stl10": write_stl10_fixture,
    "imagenet": write_imagenet_fixture,
    "caltech101": write_caltech101_fixture,
    "caltech256": write_caltech256_fixture,
    "oxfordpet": write_oxfordpet_fixture,
    "flowers102": write_flowers102_fixture,
    "fgvc_aircraft": write_fgvc_aircraft_fixture,
    "stanfordcars": write_stanfordcars_fixture,
    "sun397": write_sun397_fixture,
    "food101": write_food101_fixture,
    "eurosat": write_eurosat_fixture,
    "dtd": write_dtd_fixture,
    "pcam": write_pcam_fixture,
    "tinyimagenet": write_tinyimagenet_fixture,
    "gtsrb": write_gtsrb_fixture,
    "svhn": write_svhn_fixture,
    "fer2013": write_fer2013_fixture,
    "country211": write_country211_fixture,
}
"""One writer per paper dataset (paper_data.PAPER_DATASETS' order: the 16 reported, then 06's validation datasets):
writes it under a data root, returns what the loader must give."""


def write_fixture(name: str, root: Path) -> Fixture:
    """Write dataset `name` in its real on-disk layout under the data root `root`."""
    return FIXTURE_WRITERS[name](root)


def write_imagenet_devkit(imagenet_dir: Path) -> None:
    """imagenet/ILSVRC2012_devkit_t12.tar.gz as ImageNet's site ships it: ILSVRC2012_devkit_t12/data/meta.mat (the
    'synsets' struct: the 1000 fake leaf wnids, ILSVRC2012_ID 1..1000, plus one non-leaf synset torchvision must
    skip) and data/ILSVRC2012_validation_ground_truth.txt. Its md5 cannot match the official archive's."""
    import tarfile
    import tempfile

    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.zeros((1, N_FAKE_IMAGENET + 1), dtype=[(f, object) for f in fields])
    for i, wnid in enumerate(FAKE_WNIDS):
        synsets[0, i] = (np.uint16(i + 1), wnid, f"synset {i}, other name", "a gloss", np.uint8(0),
                         np.zeros((1, 0)), np.uint8(0), np.uint16(1300))
    synsets[0, N_FAKE_IMAGENET] = (np.uint16(1001), "n99999999", "entity", "a root", np.uint8(2),
                                   np.array([[1, 2]], dtype=np.uint16), np.uint8(19), np.uint16(0))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        savemat(data / "meta.mat", {"synsets": synsets})
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n1000\n")
        imagenet_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(imagenet_dir / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            tar.add(Path(tmp) / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
