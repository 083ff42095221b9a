"""Loaders for the paper-scale zero-shot evaluation datasets (TeCoA / PMG-AFT protocol, used by TIMA).

Protocol
--------
TeCoA (Mao et al., ICLR 2023) and PMG-AFT (Wang et al., CVPR 2024), whose set-up TIMA reproduces,
adversarially fine-tune CLIP's image encoder on TinyImageNet and then report clean and robust zero-shot
accuracy on 16 datasets: TinyImageNet itself plus 15 datasets never seen in fine-tuning
(see :data:`PAPER_DATASETS`; ``list_paper_datasets(zero_shot_only=True)`` gives the 15). Each class name is
put into TeCoA's single text template :data:`TEMPLATE` (``"This is a photo of a {}"``). Images come out of
the caller's ``transform``: the model code supplies one that resizes to 224 x 224 and returns float tensors
in [0, 1] with shape (3, 224, 224). CLIP's mean/std normalisation happens inside the model, never here, so
that attack budgets (epsilon) stay in [0, 1] pixel units.

Class names come from libraries, never from hand-typed long lists: ImageNet and TinyImageNet use
``open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES`` (the curated CLIP names, 1000 entries in the standard
sorted-wnid order); every other dataset uses the names torchvision exposes (``classes`` or ``categories``),
refined as TeCoA's ``refine_classname`` does (lower-case, ``_`` and ``-`` become spaces). A few
dataset-specific clean-ups are documented in :func:`get_classnames`.

Note: TeCoA's evaluation replaced several torchvision classes with copies carrying CLIP-paper prompts
(e.g. "A centered satellite photo of {}." for EuroSAT, "A photo of a {}, a type of flower." for Flowers102).
This module follows the single-template protocol stated in the papers; use :func:`get_classnames` with
your own templates if you need the per-dataset prompts.

On-disk layout
--------------
Everything lives under one data root (``root=``). Each dataset sits in the folder that torchvision itself
reads under the root it is given (``PaperDatasetSpec.subdir``), i.e. exactly the layout that
``download=True`` produces and that TeCoA's ``--root ./data`` uses::

    <root>/cifar-10-batches-py/      cifar10    (all 6 batches + batches.meta; torchvision checks them all)
    <root>/cifar-100-python/         cifar100
    <root>/stl10_binary/             stl10
    <root>/imagenet/val/<wnid>/      imagenet   (ImageFolder; torchvision ImageNet if meta.bin or the devkit
                                                 archive ILSVRC2012_devkit_t12.tar.gz sits in <root>/imagenet/)
    <root>/caltech101/101_ObjectCategories/
    <root>/caltech256/256_ObjectCategories/
    <root>/oxford-iiit-pet/          oxfordpet
    <root>/flowers-102/              flowers102
    <root>/fgvc-aircraft-2013b/      fgvc_aircraft
    <root>/stanford_cars/            stanfordcars (torchvision cannot download it any more)
    <root>/SUN397/                   sun397
    <root>/food-101/                 food101
    <root>/eurosat/2750/             eurosat
    <root>/dtd/dtd/                  dtd
    <root>/pcam/                     pcam       (HDF5 files; needs the optional h5py package)
    <root>/tiny-imagenet-200/        tinyimagenet (the official zip, as extracted; or <root>/tinyimagenet/)

  and the four validation datasets of notebook 06's paper study (role "validation", below)::

    <root>/gtsrb/                    gtsrb      (GTSRB/Final_Test/Images/*.ppm + GT-final_test.csv)
    <root>/svhn/                     svhn       (test_32x32.mat; torchvision's SVHN reads the folder it is given)
    <root>/fer2013/                  fer2013    (fer2013.csv or Kaggle's icml_face_data.csv: the files with test labels)
    <root>/country211/               country211 (test/<ISO code>/*.jpg, as country211.tgz extracts)

TinyImageNet: torchvision has no class for it. The official ``tiny-imagenet-200.zip`` extracts to
``<root>/tiny-imagenet-200/`` with ``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG`` (read with
ImageFolder, which walks sub-folders) and the validation images flat in ``val/images/`` with their labels in
``val/val_annotations.txt``; that layout is read as is (:class:`TinyImageNetVal`; ImageFolder would see one class,
"images"). Class folders ``<root>/tinyimagenet/{train,val}/<wnid>/*`` are read too; ``<root>/tinyimagenet/`` wins
when both exist. Labels index the sorted wnids in both layouts.

Caltech101, Caltech256, SUN397 and EuroSAT have no official split in torchvision; as in TeCoA's code the
whole set is evaluated (``split="all"``).

Validation datasets (notebook 06's selection only, never reported)
------------------------------------------------------------------
Each spec has a ``role``: ``"reported"`` for the 16 datasets above (:func:`list_paper_datasets`, every table and
loop over the reported datasets), ``"validation"`` for four more datasets (:func:`list_validation_datasets`) whose
label spaces are distinct from all 16: GTSRB (43 traffic signs), SVHN (10 house-number digits), FER2013 (7 facial
expressions) and Country211 (211 countries, geolocation). The paper study selects each method's configuration on
their test splits and on TinyImageNet's val split (docs/STUDY_PLAN.md). They load, subset and check exactly like
the reported datasets; every tool that takes a dataset name knows them, and the data doctor lists them after the 16.

Their class names and templates, and whose they are: Country211 as TeCoA's code evaluates it (its replaced
torchvision Country211 names each ISO code with ``pycountry`` and prompts "A photo I took in {}."): pycountry's
common name where it has one, else its name, and "Kosovo" for XK (TeCoA takes the official name, whose commas make
"Korea, Republic of"); GTSRB, SVHN and FER2013 are not in the peers' code and torchvision gives them no class names,
so they take TeCoA's single template with names of ours: each GTSRB ClassId's sign in plain words ("stop sign",
"speed limit 20 km/h sign"), "number 0" .. "number 9" for SVHN (CLIP's MNIST prompt puts the digit after "the
number"), and "face looking <emotion>" for FER2013 with CLIP's emotion words in the dataset's label order (0 angry,
1 disgusted, 2 fearful, 3 happy, 4 sad, 5 surprised, 6 neutral). :func:`template_for` gives a dataset's template.
SVHN and FER2013 md5-check their files, like CIFAR (see Checksums); FER2013 cannot be downloaded by torchvision.

Checksums: torchvision compares CIFAR-10/100's and STL-10's files, Flowers102's two .mat files, SVHN's and
FER2013's files with the md5
sums of the official archives. Setting the environment variable ``TIMA_SKIP_CHECKSUMS=1`` (:data:`SKIP_CHECKSUMS_ENV`)
makes those loaders check that each file exists instead; everything else (unpickling, decoding, labels) is unchanged.
It is meant for small test fixtures in the real layouts (``tests/paper_fixtures.py``), whose bytes cannot match the
official sums.

Data doctor
-----------
``python -m nbhelpers.paper_data ROOT`` (or :func:`diagnose_data_root` / :func:`format_data_report` from code) lists
every dataset as found, missing or incomplete, with the files it expected, the folder they go in and where the
dataset is obtained. Loading a dataset that is missing or incomplete fails the same way before any image is read.

Complete or refused
-------------------
:data:`OFFICIAL_SIZES` holds each split's official number of classes and images, with its source. The doctor counts
the class-folder layouts (ImageNet val, Caltech101/256, EuroSAT, Country211: folders and files, no image read) and
flags 0-byte required files; :func:`load_paper_dataset` compares every split it loads (classes and images, after
torchvision read it) and raises :class:`IncompleteDatasetError` for a partial one, unless partial data are allowed
explicitly (``allow_partial=True``, or ``TIMA_ALLOW_PARTIAL_DATA=1``: :data:`ALLOW_PARTIAL_ENV`). An evaluation set
made from partial data says so in its sampling (``"random+partial"``), a key field of every result row, so its rows
never stand for, or are reused as, the complete dataset's. The test fixtures (``tests/paper_fixtures.py``) are small
by design: the test session sets ``TIMA_ALLOW_PARTIAL_DATA=1`` (tests/conftest.py), and the tests of this check
remove it.

Evaluation subsets (ours)
-------------------------
The papers evaluate whole test sets. A smaller run takes a subset (:func:`subset_indices`), by a rule of ours:
``"random"`` (default at paper scale): the first n of a seeded permutation of the dataset's indices, fixed per
dataset and seed, an unbiased sample of the full-set accuracy the papers report; ``"balanced"``: round-robin over
the classes (in a seeded order), each class's items in a seeded order, so n >= the number of classes covers them
all; ``"first"``: the first n items in the dataset's order (class-sorted for ImageFolder, Caltech, SUN397, EuroSAT,
so a few classes only). Each rule is a fixed order of the whole dataset, so a smaller run is a prefix of a larger one.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = [
    "ALLOW_PARTIAL_ENV",
    "DATASET_ROLES",
    "DATA_STATUSES",
    "DEFAULT_SAMPLING",
    "PAPER_DATASETS",
    "SAMPLING_RULES",
    "SKIP_CHECKSUMS_ENV",
    "TEMPLATE",
    "DatasetStatus",
    "IncompleteDatasetError",
    "OFFICIAL_SIZES",
    "OfficialSize",
    "PARTIAL_MARK",
    "PaperDatasetSpec",
    "TinyImageNetVal",
    "available_paper_datasets",
    "check_dataset_files",
    "check_sampling",
    "country_names",
    "dataset_labels",
    "diagnose_data_root",
    "format_data_report",
    "get_classnames",
    "is_partial",
    "text_for",
    "partial_data_allowed",
    "list_paper_datasets",
    "list_validation_datasets",
    "load_paper_dataset",
    "main",
    "sample_order",
    "subset_indices",
    "template_for",
]

# TeCoA's finetuning.py uses ``template = 'This is a photo of a {}'`` -- no trailing period -- and PMG-AFT
# copies it; we keep it verbatim so that text embeddings match the baselines.
TEMPLATE = "This is a photo of a {}"

SKIP_CHECKSUMS_ENV = "TIMA_SKIP_CHECKSUMS"
"""Environment variable: "1" makes the md5-checked loaders (cifar10, cifar100, stl10, flowers102, svhn, fer2013)
test file existence only."""

DATASET_ROLES = ("reported", "validation")
"""What a dataset is for: one of the 16 reported datasets, or a validation dataset of 06's paper study (selection
only, never reported)."""


@dataclass(frozen=True)
class OfficialSize:
    """The official size of one dataset split: its number of classes and of images, and where that is stated."""

    classes: int
    images: int
    source: str


@dataclass(frozen=True)
class PaperDatasetSpec:
    """Where one paper-scale dataset lives under the data root, how torchvision reads it and where to get it."""

    name: str
    """Key users type, e.g. ``"cifar10"``."""
    torchvision_class: str
    """Name of the ``torchvision.datasets`` class that reads it (``"ImageFolder"`` for folder layouts)."""
    split: str
    """The declared evaluation split (``"all"``: no official split, the whole set is used)."""
    zero_shot: bool
    """False only for TinyImageNet, the fine-tuning set."""
    subdir: str
    """Folder under the data root that must exist (the one torchvision reads)."""
    hint: str
    """What the user must put where (shown in FileNotFoundError messages)."""
    source: str
    """Where the dataset is obtained: the official archive's URL or page (shown in messages and by the doctor)."""
    role: str = "reported"
    """One of :data:`DATASET_ROLES`."""
    template: str = TEMPLATE
    """The text template its class names are put into (TeCoA's single template unless the module docstring says)."""
    splits: tuple[str, ...] = ()
    """Every split its loader accepts, the evaluation split first (empty: the evaluation split only)."""
    sizes: tuple[tuple[str, OfficialSize], ...] = ()
    """(split, official size) of every split a paper tool reads (:data:`OFFICIAL_SIZES`)."""
    required: Required | None = None
    """The files and folders torchvision needs for a split under the data root (checked before reading)."""
    construct: Construct | None = None
    """How its torchvision object is built (None: ``torchvision_class(root, split=split, ...)``)."""
    downloadable: bool = True
    """Whether torchvision can fetch it (``download=True``); otherwise files are always checked up front."""
    needs_rgb: bool = False
    """Whether its loader returns images in their stored mode (grayscale), converted to RGB here."""
    classnames: tuple[str, ...] = ()
    """Class names by label when they need no files (ours or TeCoA's; empty: read from the dataset)."""
    class_folders: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(split, folder parts under the data root) of a one-folder-per-class layout: the doctor counts it."""
    doctor_splits: tuple[str, ...] = ()
    """The splits the data doctor checks (empty: the evaluation split; TinyImageNet's train split too)."""

    def __post_init__(self) -> None:
        if self.role not in DATASET_ROLES:
            raise ValueError(f"dataset {self.name!r}: role {self.role!r} is not one of {DATASET_ROLES}")
        if self.required is None:
            raise ValueError(f"dataset {self.name!r} needs required= (the files torchvision reads for a split)")
        if self.splits and self.splits[0] != self.split:
            raise ValueError(f"dataset {self.name!r}: splits {self.splits} must start with its split {self.split!r}")

    @property
    def accepted_splits(self) -> tuple[str, ...]:
        """The splits its loader accepts, the evaluation split first."""
        return self.splits or (self.split,)


# PCAM ships no class names; TeCoA's PCAM prompts are "This is a photo of healthy lymph node tissue." and
# "This is a photo of lymph node tumor tissue.", whose class parts are these (label 0, label 1).
_PCAM_CLASSNAMES = ("healthy lymph node tissue", "lymph node tumor tissue")

# GTSRB: torchvision gives ClassIds 0-42 only. Ours: each ClassId's sign (the GTSRB documentation's meaning), in
# plain words, as "<meaning> sign" so that TeCoA's template reads "This is a photo of a stop sign".
_GTSRB_SIGNS = (
    *(f"speed limit {v} km/h" for v in (20, 30, 50, 60, 70, 80)), "end of speed limit 80 km/h",
    *(f"speed limit {v} km/h" for v in (100, 120)), "no passing", "no passing for vehicles over 3.5 tons",
    "right of way at the next intersection", "priority road", "yield", "stop", "no vehicles",
    "vehicles over 3.5 tons prohibited", "no entry", "general caution", "dangerous curve to the left",
    "dangerous curve to the right", "double curve", "bumpy road", "slippery road", "road narrows on the right",
    "road work", "traffic signals", "pedestrians", "children crossing", "bicycles crossing", "beware of ice and snow",
    "wild animals crossing", "end of all speed and passing limits", "turn right ahead", "turn left ahead",
    "ahead only", "go straight or right", "go straight or left", "keep right", "keep left", "roundabout mandatory",
    "end of no passing", "end of no passing for vehicles over 3.5 tons",
)
_GTSRB_CLASSNAMES = tuple(f"{sign} sign" for sign in _GTSRB_SIGNS)
# SVHN: torchvision maps the digit 0's label 10 to 0, so label k is the digit k. Ours, after CLIP's MNIST prompt.
_SVHN_CLASSNAMES = tuple(f"number {k}" for k in range(10))
# FER2013's labels (the 'emotion' column): 0 angry ... 6 neutral; CLIP's first word per class, in that order.
_FER2013_EMOTIONS = ("angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral")
_FER2013_CLASSNAMES = tuple(f"face looking {e}" for e in _FER2013_EMOTIONS)

# ---------------------------------------------------------------------------------- each dataset's files and reader
# The files torchvision needs for a split under the data root (checked without hashing), and how its dataset object is
# built (no checks: see load_paper_dataset): one function each per dataset, named in its record below.
Required = Callable[[Path, str], list[Path]]
# (data root, split, {"transform": ..., ["download": ...]}, existence-only file checks) -> the torchvision dataset
Construct = Callable[[Path, str, dict[str, Any], bool], Any]


def _tvd() -> Any:
    """torchvision.datasets (imported when a dataset is read, not when the package is)."""
    import torchvision.datasets as tvd

    return tvd


def _cifar10_files(root: Path, split: str) -> list[Path]:
    base = root / "cifar-10-batches-py"
    return [base / f for f in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")]


def _cifar100_files(root: Path, split: str) -> list[Path]:
    return [root / "cifar-100-python" / f for f in ("train", "test", "meta")]


def _stl10_files(root: Path, split: str) -> list[Path]:
    files = ("train_X.bin", "train_y.bin", "unlabeled_X.bin", "test_X.bin", "test_y.bin", "class_names.txt")
    return [root / "stl10_binary" / f for f in files]


def _imagenet_files(root: Path, split: str) -> list[Path]:
    return [root / "imagenet" / split]


def _caltech101_files(root: Path, split: str) -> list[Path]:
    return [root / "caltech101" / "101_ObjectCategories"]


def _caltech256_files(root: Path, split: str) -> list[Path]:
    return [root / "caltech256" / "256_ObjectCategories"]


def _oxfordpet_files(root: Path, split: str) -> list[Path]:
    base = root / "oxford-iiit-pet"
    return [base / "images", base / "annotations" / f"{split}.txt"]


def _flowers102_files(root: Path, split: str) -> list[Path]:
    base = root / "flowers-102"
    return [base / "jpg", base / "imagelabels.mat", base / "setid.mat"]


def _fgvc_aircraft_files(root: Path, split: str) -> list[Path]:
    data = root / "fgvc-aircraft-2013b" / "data"
    return [data / "images", data / "variants.txt", data / f"images_variant_{split}.txt"]


def _stanfordcars_files(root: Path, split: str) -> list[Path]:
    base = root / "stanford_cars"
    if split == "train":
        return [base / "devkit" / "cars_meta.mat", base / "devkit" / "cars_train_annos.mat", base / "cars_train"]
    return [base / "devkit" / "cars_meta.mat", base / "cars_test_annos_withlabels.mat", base / "cars_test"]


def _sun397_files(root: Path, split: str) -> list[Path]:
    return [root / "SUN397" / "ClassName.txt", root / "SUN397" / "a"]  # a/abbey/... holds the first class


def _food101_files(root: Path, split: str) -> list[Path]:
    base = root / "food-101"
    return [base / "images", base / "meta" / f"{split}.json"]


def _eurosat_files(root: Path, split: str) -> list[Path]:
    return [root / "eurosat" / "2750"]


def _dtd_files(root: Path, split: str) -> list[Path]:
    data = root / "dtd" / "dtd"
    return [data / "images", data / "labels" / f"{split}1.txt"]


def _pcam_files(root: Path, split: str) -> list[Path]:
    stem = "valid" if split == "val" else split
    return [root / "pcam" / f"camelyonpatch_level_2_split_{stem}_{xy}.h5" for xy in ("x", "y")]


def _tinyimagenet_files(root: Path, split: str) -> list[Path]:
    base = _dataset_dir("tinyimagenet", root)
    if split == "val" and _tiny_val_is_official(base / "val"):
        return [base / "val" / "images", base / "val" / "val_annotations.txt"]
    return [base / split]


def _gtsrb_files(root: Path, split: str) -> list[Path]:
    base = root / "gtsrb"
    if split == "train":
        return [base / "GTSRB" / "Training"]
    return [base / "GTSRB" / "Final_Test" / "Images", base / "GT-final_test.csv"]


def _svhn_files(root: Path, split: str) -> list[Path]:
    return [root / "svhn" / f"{split}_32x32.mat"]


def _fer2013_files(root: Path, split: str) -> list[Path]:
    base = root / "fer2013"  # either file holds the test labels (torchvision prefers fer2013.csv)
    return [base / ("icml_face_data.csv" if (base / "icml_face_data.csv").is_file()
                    and not (base / "fer2013.csv").is_file() else "fer2013.csv")]


def _country211_files(root: Path, split: str) -> list[Path]:
    return [root / "country211" / split]


def _cifar_reader(cls_name: str) -> Construct:
    """CIFAR10 / CIFAR100: train= instead of split=."""
    def construct(root: Path, split: str, kw: dict[str, Any], skip: bool) -> Any:
        cls = getattr(_tvd(), cls_name)
        return (_existence_checked(cls) if skip else cls)(root, train=split == "train", **kw)
    return construct


def _checked_reader(cls_name: str, *, folder: str = "") -> Construct:
    """A torchvision class taking split= whose md5 checks TIMA_SKIP_CHECKSUMS turns into existence checks (in
    <root>/<folder> when the class reads the folder it is given, e.g. SVHN)."""
    def construct(root: Path, split: str, kw: dict[str, Any], skip: bool) -> Any:
        cls = getattr(_tvd(), cls_name)
        return (_existence_checked(cls) if skip else cls)(root / folder if folder else root, split=split, **kw)
    return construct


def _no_split_reader(cls_name: str) -> Construct:
    """A torchvision class without splits (the whole set)."""
    def construct(root: Path, split: str, kw: dict[str, Any], skip: bool) -> Any:
        return getattr(_tvd(), cls_name)(root, **kw)
    return construct


def _imagenet_reader(root: Path, split: str, kw: dict[str, Any], skip: bool) -> Any:
    imagenet_dir = root / "imagenet"
    if _use_torchvision_imagenet(imagenet_dir):
        return _tvd().ImageNet(imagenet_dir, split=split, **kw)
    return _tvd().ImageFolder(imagenet_dir / split, **kw)


def _tinyimagenet_reader(root: Path, split: str, kw: dict[str, Any], skip: bool) -> Any:
    split_dir = _dataset_dir("tinyimagenet", root) / split
    if split == "val" and _tiny_val_is_official(split_dir):
        return TinyImageNetVal(split_dir, transform=kw["transform"])
    return _tvd().ImageFolder(split_dir, **kw)


def _caltech101_reader(root: Path, split: str, kw: dict[str, Any], skip: bool) -> Any:
    return _tvd().Caltech101(root, target_type="category", **kw)


def _sun397_reader(root: Path, split: str, kw: dict[str, Any], skip: bool) -> Any:
    return _sorted_sun397(_tvd().SUN397(root, **kw))


_NO_DOWNLOAD = " torchvision cannot download it: get it by hand."


def _download_hint(folder: str) -> str:
    return f" Or pass download=True on a machine with internet (torchvision creates <root>/{folder})."


_SPEC_LIST: tuple[PaperDatasetSpec, ...] = (
    PaperDatasetSpec(
        "cifar10", "CIFAR10", "test", True, "cifar-10-batches-py",
        "Extract cifar-10-python.tar.gz so that <root>/cifar-10-batches-py/ holds data_batch_1..5, test_batch "
        "and batches.meta." + _download_hint("cifar-10-batches-py"),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        splits=("test", "train"),
        sizes=(
            ("test", OfficialSize(10, 10_000, "https://www.cs.toronto.edu/~kriz/cifar.html")),
            ("train", OfficialSize(10, 50_000, "https://www.cs.toronto.edu/~kriz/cifar.html")),
        ),
        required=_cifar10_files,
        construct=_cifar_reader("CIFAR10"),
    ),
    PaperDatasetSpec(
        "cifar100", "CIFAR100", "test", True, "cifar-100-python",
        "Extract cifar-100-python.tar.gz so that <root>/cifar-100-python/ holds train, test and meta."
        + _download_hint("cifar-100-python"),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        splits=("test", "train"),
        sizes=(
            ("test", OfficialSize(100, 10_000, "https://www.cs.toronto.edu/~kriz/cifar.html")),
            ("train", OfficialSize(100, 50_000, "https://www.cs.toronto.edu/~kriz/cifar.html")),
        ),
        required=_cifar100_files,
        construct=_cifar_reader("CIFAR100"),
    ),
    PaperDatasetSpec(
        "stl10", "STL10", "test", True, "stl10_binary",
        "Extract stl10_binary.tar.gz so that <root>/stl10_binary/ holds {train,test}_{X,y}.bin, unlabeled_X.bin "
        "and class_names.txt (torchvision checks every file)." + _download_hint("stl10_binary"),
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        splits=("test", "train"),
        sizes=(
            ("test", OfficialSize(10, 8_000, "https://cs.stanford.edu/~acoates/stl10/ (800 test images per class)")),
            ("train", OfficialSize(10, 5_000, "https://cs.stanford.edu/~acoates/stl10/ (500 per class)")),
        ),
        required=_stl10_files,
        construct=_checked_reader("STL10"),
    ),
    PaperDatasetSpec(
        "imagenet", "ImageFolder", "val", True, "imagenet",
        "Put the ImageNet-1k validation images in class folders: <root>/imagenet/val/<wnid>/*.JPEG (1000 folders). "
        "Optionally add ILSVRC2012_devkit_t12.tar.gz or torchvision's meta.bin to <root>/imagenet/ to read it "
        "with torchvision.datasets.ImageNet." + _NO_DOWNLOAD,
        "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php (ILSVRC2012_img_val.tar and "
        "ILSVRC2012_devkit_t12.tar.gz; registration needed)",
        splits=("val", "train"),
        sizes=(("val", OfficialSize(1_000, 50_000, "ILSVRC2012 (Russakovsky et al. 2015, Table 2: 50,000 val)")),),
        required=_imagenet_files,
        construct=_imagenet_reader,
        downloadable=False,
        class_folders=(("val", ("imagenet", "val")),),
    ),
    PaperDatasetSpec(
        "caltech101", "Caltech101", "all", True, "caltech101",
        "Extract 101_ObjectCategories.tar.gz to <root>/caltech101/101_ObjectCategories/<category>/image_*.jpg "
        "(no official split: the whole set is used)." + _download_hint("caltech101"),
        "https://data.caltech.edu/records/mzrjq-6wc02 (caltech-101.zip, holding 101_ObjectCategories.tar.gz)",
        splits=("all",),
        sizes=(("all", OfficialSize(101, 8_677, "Caltech101 (data.caltech.edu): 9,144 images incl. the 467 of "
                                        "BACKGROUND_Google, which torchvision leaves out")),),
        required=_caltech101_files,
        construct=_caltech101_reader,
        needs_rgb=True,
        class_folders=(("all", ("caltech101", "101_ObjectCategories")),),
    ),
    PaperDatasetSpec(
        "caltech256", "Caltech256", "all", True, "caltech256",
        "Extract 256_ObjectCategories.tar to <root>/caltech256/256_ObjectCategories/<NNN.category>/*.jpg "
        "(no official split: the whole set is used)." + _download_hint("caltech256"),
        "https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar",
        splits=("all",),
        sizes=(("all", OfficialSize(257, 30_607, "Caltech256 (Griffin et al. 2007): 30,607 images, 256 + clutter")),),
        required=_caltech256_files,
        construct=_no_split_reader("Caltech256"),
        needs_rgb=True,
        class_folders=(("all", ("caltech256", "256_ObjectCategories")),),
    ),
    PaperDatasetSpec(
        "oxfordpet", "OxfordIIITPet", "test", True, "oxford-iiit-pet",
        "Extract images.tar.gz and annotations.tar.gz into <root>/oxford-iiit-pet/ (images/, annotations/test.txt)."
        + _download_hint("oxford-iiit-pet"),
        "https://www.robots.ox.ac.uk/~vgg/data/pets/ (data/images.tar.gz and data/annotations.tar.gz)",
        splits=("test", "trainval"),
        sizes=(("test", OfficialSize(37, 3_669, "Oxford-IIIT Pet annotations/test.txt (3,669 lines)")),),
        required=_oxfordpet_files,
    ),
    PaperDatasetSpec(
        "flowers102", "Flowers102", "test", True, "flowers-102",
        "Put 102flowers.tgz's jpg/ folder, imagelabels.mat and setid.mat into <root>/flowers-102/."
        + _download_hint("flowers-102"),
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, imagelabels.mat, setid.mat)",
        splits=("test", "val", "train"),
        sizes=(("test", OfficialSize(102, 6_149, "Oxford Flowers102 setid.mat tstid (6,149)")),),
        required=_flowers102_files,
        construct=_checked_reader("Flowers102"),
    ),
    PaperDatasetSpec(
        "fgvc_aircraft", "FGVCAircraft", "test", True, "fgvc-aircraft-2013b",
        "Extract fgvc-aircraft-2013b.tar.gz so that <root>/fgvc-aircraft-2013b/data/ holds images/, variants.txt "
        "and images_variant_test.txt." + _download_hint("fgvc-aircraft-2013b"),
        "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
        splits=("test", "val", "train", "trainval"),
        sizes=(("test", OfficialSize(100, 3_333, "FGVC-Aircraft 2013b images_variant_test.txt (3,333)")),),
        required=_fgvc_aircraft_files,
    ),
    PaperDatasetSpec(
        "stanfordcars", "StanfordCars", "test", True, "stanford_cars",
        "Put devkit/ (with cars_meta.mat), cars_test/ and cars_test_annos_withlabels.mat into <root>/stanford_cars/."
        " The original URL is dead, so" + _NO_DOWNLOAD.lstrip(),
        "mirrors listed in https://github.com/pytorch/vision/issues/7545 (the images from Kaggle's "
        "stanford-cars-dataset, car_devkit.tgz and cars_test_annos_withlabels.mat)",
        splits=("test", "train"),
        sizes=(("test", OfficialSize(196, 8_041, "Stanford Cars cars_test_annos_withlabels.mat (8,041)")),),
        required=_stanfordcars_files,
        downloadable=False,
    ),
    PaperDatasetSpec(
        "sun397", "SUN397", "all", True, "SUN397",
        "Extract SUN397.tar.gz so that <root>/SUN397/ holds ClassName.txt and the a/, b/, ... image folders "
        "(no official split in torchvision: the whole set is used)." + _download_hint("SUN397"),
        "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
        splits=("all",),
        sizes=(("all", OfficialSize(397, 108_754, "SUN397 (Xiao et al. 2010): 108,754 images of 397 categories")),),
        required=_sun397_files,
        construct=_sun397_reader,
    ),
    PaperDatasetSpec(
        "food101", "Food101", "test", True, "food-101",
        "Extract food-101.tar.gz so that <root>/food-101/ holds images/ and meta/test.json."
        + _download_hint("food-101"),
        "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
        splits=("test", "train"),
        sizes=(("test", OfficialSize(101, 25_250, "Food-101 meta/test.json (250 per class)")),),
        required=_food101_files,
    ),
    PaperDatasetSpec(
        "eurosat", "EuroSAT", "all", True, "eurosat",
        "Extract EuroSAT.zip (RGB) so that <root>/eurosat/2750/<Class>/*.jpg exists "
        "(no official split: the whole set is used)." + _download_hint("eurosat"),
        "https://huggingface.co/datasets/torchgeo/eurosat (EuroSAT.zip, the RGB version)",
        splits=("all",),
        sizes=(("all", OfficialSize(10, 27_000, "EuroSAT RGB (Helber et al. 2019): 27,000 images")),),
        required=_eurosat_files,
        construct=_no_split_reader("EuroSAT"),
        class_folders=(("all", ("eurosat", "2750")),),
    ),
    PaperDatasetSpec(
        "dtd", "DTD", "test", True, "dtd",
        "Extract dtd-r1.0.1.tar.gz into <root>/dtd/ so that <root>/dtd/dtd/images/ and <root>/dtd/dtd/labels/test1.txt "
        "exist (partition 1)." + _download_hint("dtd"),
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
        splits=("test", "val", "train"),
        sizes=(("test", OfficialSize(47, 1_880, "DTD labels/test1.txt (40 per class)")),),
        required=_dtd_files,
    ),
    PaperDatasetSpec(
        "pcam", "PCAM", "test", True, "pcam",
        "Put the decompressed camelyonpatch_level_2_split_test_{x,y}.h5 files into <root>/pcam/ (reading them needs "
        "`pip install h5py`)." + _download_hint("pcam"),
        "https://github.com/basveeling/pcam (Google Drive links to the .h5.gz files)",
        splits=("test", "val", "train"),
        sizes=(("test", OfficialSize(2, 32_768, "PCam camelyonpatch_level_2_split_test (32,768 patches)")),),
        required=_pcam_files,
        classnames=_PCAM_CLASSNAMES,
    ),
    PaperDatasetSpec(
        "tinyimagenet", "ImageFolder", "val", False, "tinyimagenet",
        "Extract tiny-imagenet-200.zip into <root>/ as is (<root>/tiny-imagenet-200/ with wnids.txt, "
        "train/<wnid>/images/, val/images/ and val/val_annotations.txt), or put class folders in "
        "<root>/tinyimagenet/train/<wnid>/ and <root>/tinyimagenet/val/<wnid>/." + _NO_DOWNLOAD,
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        splits=("val", "train"),
        sizes=(
            ("val", OfficialSize(200, 10_000, "tiny-imagenet-200.zip val/val_annotations.txt (50 per class)")),
            ("train", OfficialSize(200, 100_000, "tiny-imagenet-200.zip train/ (500 per class)")),
        ),
        required=_tinyimagenet_files,
        doctor_splits=("val", "train"),  # the fine-tuning set's train split too
        construct=_tinyimagenet_reader,
        downloadable=False,
    ),
    # ---- validation datasets of 06's paper study (selection only, never reported; module docstring)
    PaperDatasetSpec(
        "gtsrb", "GTSRB", "test", True, "gtsrb",
        "Extract GTSRB_Final_Test_Images.zip and GTSRB_Final_Test_GT.zip into <root>/gtsrb/ so that "
        "<root>/gtsrb/GTSRB/Final_Test/Images/*.ppm and <root>/gtsrb/GT-final_test.csv exist."
        + _download_hint("gtsrb"),
        "https://benchmark.ini.rub.de/gtsrb_dataset.html (GTSRB_Final_Test_Images.zip and GTSRB_Final_Test_GT.zip)",
        role="validation",
        splits=("test", "train"),
        sizes=(("test", OfficialSize(43, 12_630, "GTSRB GT-final_test.csv (12,630)")),),
        required=_gtsrb_files,
        classnames=_GTSRB_CLASSNAMES,
    ),
    PaperDatasetSpec(
        "svhn", "SVHN", "test", True, "svhn",
        "Put test_32x32.mat (the cropped digits, format 2) into <root>/svhn/. Or pass download=True on a machine with "
        "internet (torchvision writes the file into <root>/svhn/).",
        "http://ufldl.stanford.edu/housenumbers/ (test_32x32.mat)",
        role="validation",
        splits=("test", "train", "extra"),
        sizes=(
            ("test", OfficialSize(10, 26_032, "http://ufldl.stanford.edu/housenumbers/ test_32x32.mat (26,032)")),
        ),
        required=_svhn_files,
        construct=_checked_reader("SVHN", folder="svhn"),
        classnames=_SVHN_CLASSNAMES,
    ),
    PaperDatasetSpec(
        "fer2013", "FER2013", "test", True, "fer2013",
        "Put fer2013.csv (from fer2013.tar.gz) or Kaggle's icml_face_data.csv into <root>/fer2013/ (train.csv and "
        "test.csv alone have no test labels)." + _NO_DOWNLOAD,
        "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge "
        "(icml_face_data.csv; an account is needed)",
        role="validation",
        splits=("test", "train"),
        sizes=(("test", OfficialSize(7, 7_178, "FER2013 PublicTest + PrivateTest rows (3,589 each)")),),
        required=_fer2013_files,
        construct=_checked_reader("FER2013"),
        downloadable=False,
        needs_rgb=True,
        classnames=_FER2013_CLASSNAMES,
    ),
    PaperDatasetSpec(
        "country211", "Country211", "test", True, "country211",
        "Extract country211.tgz into <root>/ so that <root>/country211/test/<ISO code>/*.jpg exists."
        + _download_hint("country211"),
        "https://openaipublic.azureedge.net/clip/data/country211.tgz (OpenAI's CLIP repository, data/country211.md)",
        role="validation", template="A photo I took in {}.",
        splits=("test", "valid", "train"),
        sizes=(("test", OfficialSize(211, 21_100, "OpenAI CLIP data/country211.md (100 test images per country)")),),
        required=_country211_files,
        class_folders=(("test", ("country211", "test")),),
    ),
)

PAPER_DATASETS: dict[str, PaperDatasetSpec] = {spec.name: spec for spec in _SPEC_LIST}
"""Every paper-scale dataset by key: the 16 reported ones (TinyImageNet, the fine-tuning set, plus the 15 zero-shot
ones; :func:`list_paper_datasets`), then the validation datasets of 06's paper study (:func:`list_validation_datasets`)."""

# (dataset, split) -> official size, for every split a paper tool reads (evaluation splits, the fine-tuning splits),
# from the records. A split with fewer classes or images than this is incomplete (module docstring, "Complete or
# refused").
OFFICIAL_SIZES: dict[tuple[str, str], OfficialSize] = {(spec.name, split): size for spec in _SPEC_LIST
                                                       for split, size in spec.sizes}


def register_dataset(spec: PaperDatasetSpec) -> PaperDatasetSpec:
    """Add a paper dataset's record (a new name) to PAPER_DATASETS and its official sizes to OFFICIAL_SIZES."""
    if spec.name in PAPER_DATASETS:
        raise ValueError(f"paper dataset {spec.name!r} is already registered")
    PAPER_DATASETS[spec.name] = spec
    OFFICIAL_SIZES.update({(spec.name, split): size for split, size in spec.sizes})
    return spec


@contextlib.contextmanager
def registered_dataset(spec: PaperDatasetSpec) -> Iterator[PaperDatasetSpec]:
    """A paper dataset's record registered for the duration of a block (tests), then removed."""
    register_dataset(spec)
    try:
        yield spec
    finally:
        PAPER_DATASETS.pop(spec.name, None)
        for split, _ in spec.sizes:
            OFFICIAL_SIZES.pop((spec.name, split), None)


ALLOW_PARTIAL_ENV = "TIMA_ALLOW_PARTIAL_DATA"
"""Environment variable: "1" lets :func:`load_paper_dataset` read an incomplete split (fewer classes or images than
:data:`OFFICIAL_SIZES`); the evaluation set then says so (``data.EvalSet.sampling`` ends in :data:`PARTIAL_MARK`)."""
PARTIAL_MARK = "+partial"

_NOT_A_CLASS = frozenset({"BACKGROUND_Google"})  # torchvision's Caltech101 leaves this folder out


class IncompleteDatasetError(FileNotFoundError):
    """A dataset split with fewer classes or images than its official size (refused unless partial data are allowed)."""


def partial_data_allowed() -> bool:
    """Whether the environment allows partial data (:data:`ALLOW_PARTIAL_ENV` = "1")."""
    value = os.environ.get(ALLOW_PARTIAL_ENV, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"environment variable {ALLOW_PARTIAL_ENV} must be '0' or '1', got {value!r}")
    return value == "1"


def _allow_partial(allow_partial: bool | None) -> bool:
    """The explicit allowance, or the environment's (:data:`ALLOW_PARTIAL_ENV`) when None."""
    return partial_data_allowed() if allow_partial is None else allow_partial


def _shortfall(name: str, split: str, *, classes: int, images: int) -> str:
    """'' when a split has at least its official classes and images; else what it lacks, in words."""
    official = OFFICIAL_SIZES.get((name, split))
    if official is None:
        return ""
    parts = [f"{classes} of {official.classes} classes" if classes < official.classes else "",
             f"{images} of {official.images} images" if images < official.images else ""]
    return ", ".join(p for p in parts if p)


def _count_class_folders(name: str, root: Path, split: str) -> tuple[int, int] | None:
    """(class folders, image files) of a class-folder layout, by directory reads only; None for other layouts."""
    where = dict(PAPER_DATASETS[name].class_folders).get(split)
    if where is None:
        return None
    folder = root.joinpath(*where)
    if not folder.is_dir():
        return None
    classes = images = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir() and entry.name not in _NOT_A_CLASS:
                classes += 1
                with os.scandir(entry.path) as files:
                    images += sum(1 for f in files if f.is_file())
    return classes, images


# Caltech101's two face folders differ only in framing; CLIP's evaluation names them like this.
_CALTECH101_RENAMES = {"faces": "off-center face", "faces easy": "centered face"}

_IMAGENET_DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
_IMAGENET_VAL_TAR = "ILSVRC2012_img_val.tar"
_WNID = re.compile(r"^n\d{8}$")


def list_paper_datasets(*, zero_shot_only: bool = False) -> list[str]:
    """The 16 reported dataset keys in paper order; with ``zero_shot_only`` the 15 zero-shot ones (no TinyImageNet).
    The validation datasets of 06's paper study are not among them (:func:`list_validation_datasets`)."""
    return [name for name, spec in PAPER_DATASETS.items()
            if spec.role == "reported" and (spec.zero_shot or not zero_shot_only)]


def list_validation_datasets() -> list[str]:
    """The validation datasets of 06's paper study (role "validation": selection only, never reported)."""
    return [name for name, spec in PAPER_DATASETS.items() if spec.role == "validation"]


def template_for(name: str) -> str:
    """The text template of a paper dataset's class names (TeCoA's :data:`TEMPLATE` but for Country211's)."""
    return _spec(name).template


def _spec(name: str) -> PaperDatasetSpec:
    try:
        return PAPER_DATASETS[name]
    except KeyError:
        allowed = ", ".join(PAPER_DATASETS)
        raise ValueError(f"unknown paper dataset {name!r}; allowed names: {allowed}") from None


def _resolve_split(spec: PaperDatasetSpec, split: str | None) -> str:
    split = spec.split if split is None else split
    allowed = spec.accepted_splits
    if split not in allowed:
        raise ValueError(f"{spec.name}: unknown split {split!r}; allowed: {', '.join(allowed)}")
    return split


_TINY_OFFICIAL = "tiny-imagenet-200"  # the folder tiny-imagenet-200.zip extracts to


def _dataset_dir(name: str, root: Path) -> Path:
    """The folder under ``root`` holding ``name`` (tinyimagenet: tinyimagenet/, else tiny-imagenet-200/ if there)."""
    folder = root / PAPER_DATASETS[name].subdir
    if name == "tinyimagenet" and not folder.exists() and (root / _TINY_OFFICIAL).exists():
        return root / _TINY_OFFICIAL
    return folder


def _tiny_val_is_official(val_dir: Path) -> bool:
    """Whether a TinyImageNet val/ folder is in the official flat layout (images/ + val_annotations.txt)."""
    return (val_dir / "images").is_dir() or (val_dir / "val_annotations.txt").is_file()


def _required_paths(name: str, root: Path, split: str) -> list[Path]:
    """Files/folders torchvision needs for ``name``/``split`` under ``root`` (its record's ``required``)."""
    return PAPER_DATASETS[name].required(root, split)


def _construct(name: str, root: Path, split: str, transform: Callable[[Any], Any] | None, download: bool) -> Any:
    """Build the torchvision dataset object for ``name`` (its record's ``construct``; no checks: see
    :func:`load_paper_dataset`)."""
    spec = PAPER_DATASETS[name]
    kw: dict[str, Any] = {"transform": transform, **({"download": download} if spec.downloadable else {})}
    skip = _skip_checksums() and not download
    if spec.construct is not None:
        return spec.construct(root, split, kw, skip)
    return getattr(_tvd(), spec.torchvision_class)(root, split=split, **kw)  # the class takes split= with our names


def _is_empty_dir(path: Path) -> bool:
    """True for a folder without any entry (one directory read, stops at the first entry)."""
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _problems(name: str, root: Path, split: str) -> tuple[list[Path], list[Path]]:
    """(missing paths, empty folders) among what ``name``/``split`` needs under ``root``; only ``stat`` calls and
    one directory read per required folder, so it is instant on any size of dataset."""
    required = _required_paths(name, root, split)
    if name == "imagenet" and not required[0].is_dir() and split == "val":
        # torchvision's ImageNet can build val/ itself from the official archives.
        archives = [root / "imagenet" / _IMAGENET_DEVKIT, root / "imagenet" / _IMAGENET_VAL_TAR]
        if all(p.is_file() for p in archives):
            return [], []
    missing = [p for p in required if not p.exists()]
    empty = [p for p in required if (p.is_dir() and _is_empty_dir(p)) or (p.is_file() and p.stat().st_size == 0)]
    return missing, empty


def _obtain(spec: PaperDatasetSpec) -> str:
    """The how-to-obtain sentence of every data error: what to put where, and where to get it."""
    return f"{spec.hint} Get it from {spec.source} (read with torchvision.datasets.{spec.torchvision_class})."


def _missing_error(spec: PaperDatasetSpec, paths: Sequence[Path], detail: str = "", *, root: Path | None = None,
                   empty: Sequence[Path] = ()) -> FileNotFoundError:
    """The FileNotFoundError users see: dataset name, exact paths under the root, what to put there and where to
    get it; "incomplete" when the dataset's folder exists but some of its files are missing or empty."""
    listed = ", ".join(str(p) for p in paths)
    if detail:
        return FileNotFoundError(f"{spec.name}: could not read the files expected at {listed} ({detail}). "
                                 f"{_obtain(spec)}")
    folder = _dataset_dir(spec.name, root) if root is not None else None
    if folder is not None and folder.is_dir():
        parts = [f"lacks {listed}"] if paths else []
        if empty:
            folders, files = [p for p in empty if p.is_dir()], [p for p in empty if not p.is_dir()]
            parts += (["has empty folder(s) " + ", ".join(map(str, folders))] if folders else []) + (
                ["has empty (0-byte) file(s) " + ", ".join(map(str, files))] if files else [])
        return FileNotFoundError(f"{spec.name}: incomplete: {folder} exists but {' and '.join(parts)}. "
                                 f"{_obtain(spec)}")
    return FileNotFoundError(f"{spec.name}: not found: {listed}. {_obtain(spec)}")


def check_dataset_files(name: str, *, root: str | os.PathLike[str], split: str | None = None) -> None:
    """Raise FileNotFoundError (paths + what to put there + where to get it) unless ``name``'s ``split`` files are
    under ``root``: "not found" without the dataset's folder, "incomplete" when files are missing or folders empty.

    Only ``stat`` calls: instant, reads nothing. ValueError for an unknown name or split.
    """
    spec = _spec(name)
    _check_files(spec, Path(root).expanduser(), _resolve_split(spec, split))


def available_paper_datasets(root: str | os.PathLike[str], *, split: str | None = None) -> list[str]:
    """The paper datasets (paper order) whose files for ``split`` (default: each one's evaluation split) are
    present under ``root``; datasets without such a split are left out."""
    present = []
    for name in PAPER_DATASETS:
        if split is not None and split not in PAPER_DATASETS[name].accepted_splits:
            continue
        try:
            check_dataset_files(name, root=root, split=split)
        except FileNotFoundError:
            continue
        present.append(name)
    return present


def _check_files(spec: PaperDatasetSpec, root: Path, split: str) -> None:
    """Raise FileNotFoundError naming every missing required path and empty required folder."""
    missing, empty = _problems(spec.name, root, split)
    if missing or empty:
        raise _missing_error(spec, missing, root=root, empty=empty)


# ------------------------------------------------------------------------------------------------- data doctor

DATA_STATUSES = ("found", "missing", "incomplete")
"""What :func:`diagnose_data_root` says of a dataset: all files there, its folder absent, or folder there but not
every file (or an empty folder)."""


@dataclass(frozen=True)
class DatasetStatus:
    """One dataset as found under a data root (a row of :func:`diagnose_data_root`)."""

    dataset: str
    status: str
    """One of :data:`DATA_STATUSES`."""
    folder: str
    """The folder the dataset must go in (under the data root)."""
    splits: tuple[str, ...]
    """The splits checked (the evaluation split; TinyImageNet also its train split)."""
    expected: tuple[str, ...]
    """Every file or folder checked."""
    problems: tuple[str, ...]
    """The expected paths that are missing, and required folders that are empty (``"<path> (empty)"``)."""
    torchvision_class: str
    source: str
    """Where the dataset is obtained (URL or page)."""
    hint: str
    """What to put where."""
    role: str = "reported"
    """One of :data:`DATASET_ROLES` (a validation dataset serves 06's paper study only)."""

    def as_row(self) -> dict[str, str]:
        """A flat dict of strings (one table row; ``pandas.DataFrame([s.as_row() for s in statuses])``)."""
        return {"dataset": self.dataset, "status": self.status, "role": self.role, "folder": self.folder,
                "splits": ", ".join(self.splits),
                "problems": "; ".join(self.problems), "expected": "; ".join(self.expected),
                "torchvision_class": self.torchvision_class, "source": self.source, "hint": self.hint}


def diagnose_data_root(root: str | os.PathLike[str], *, datasets: Sequence[str] | None = None) -> list[DatasetStatus]:
    """The status of every paper dataset (the 16 reported ones, then 06's validation datasets; or of ``datasets``, in
    that order) under the data root ``root``.

    Only ``stat`` calls and one directory read per required folder: instant, reads no image. A root that does not
    exist gives every dataset as missing. ValueError for an unknown dataset name.
    """
    base = Path(root).expanduser()
    names = list(PAPER_DATASETS) if datasets is None else list(datasets)
    for name in names:
        _spec(name)
    out = []
    for name in names:
        spec = PAPER_DATASETS[name]
        splits = spec.doctor_splits or (spec.split,)
        expected: list[Path] = []
        problems: list[str] = []
        for split in splits:
            missing, empty = _problems(name, base, split)
            expected += _required_paths(name, base, split)
            problems += [str(p) for p in missing] + [f"{p} (empty)" for p in empty]
            counted = None if missing or empty else _count_class_folders(name, base, split)
            short = _shortfall(name, split, classes=counted[0], images=counted[1]) if counted else ""
            if short:
                problems.append(f"{split}: {short} (official: {OFFICIAL_SIZES[name, split].source})")
        folder = _dataset_dir(name, base)
        status = "found" if not problems else ("incomplete" if folder.is_dir() else "missing")
        out.append(DatasetStatus(name, status, str(folder), splits, tuple(dict.fromkeys(map(str, expected))),
                                 tuple(dict.fromkeys(problems)), spec.torchvision_class, spec.source, spec.hint,
                                 role=spec.role))
    return out


def format_data_report(statuses: Sequence[DatasetStatus], *, root: str | os.PathLike[str] | None = None) -> str:
    """A plain-text table of :func:`diagnose_data_root`'s statuses: one line per dataset, then for each one not
    found the files it lacks (relative to ``root`` when given), where they go and where to get the dataset. A
    validation dataset's line ends with "(validation: 06's paper study only)"."""
    base = None if root is None else str(Path(root).expanduser())

    def short(path: str) -> str:
        return path[len(base):].lstrip(os.sep) or "." if base and path.startswith(base) else path

    lines = [f"data root: {base}"] if base is not None else []
    width = max((len(s.dataset) for s in statuses), default=7)
    lines.append(f"{'dataset':<{width}}  {'status':<10}  folder")
    lines += [f"{s.dataset:<{width}}  {s.status:<10}  {short(s.folder)}"
              + ("  (validation: 06's paper study only)" if s.role == "validation" else "") for s in statuses]
    for s in statuses:
        if s.status == "found":
            continue
        what = "expected" if s.status == "missing" else "lacks"
        lines += ["", f"{s.dataset} ({s.status}): {what} {', '.join(short(p) for p in s.problems)}",
                  f"  goes in: {s.folder}", f"  what:    {s.hint}",
                  f"  get it:  {s.source} (torchvision.datasets.{s.torchvision_class})"]
    counts = {k: sum(s.status == k for s in statuses) for k in DATA_STATUSES}
    lines += ["", ", ".join(f"{v} {k}" for k, v in counts.items())]
    return "\n".join(lines)


class _ToRGB:
    """Convert a PIL image to RGB (e.g. Caltech's grayscale JPEGs), then apply ``transform`` if any."""

    def __init__(self, transform: Callable[[Any], Any] | None) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> Any:
        if getattr(image, "mode", "RGB") != "RGB":
            image = image.convert("RGB")
        return image if self.transform is None else self.transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def _use_torchvision_imagenet(imagenet_dir: Path) -> bool:
    return (imagenet_dir / "meta.bin").is_file() or (imagenet_dir / _IMAGENET_DEVKIT).is_file()


def _skip_checksums() -> bool:
    """Whether ``TIMA_SKIP_CHECKSUMS=1`` asks for existence-only file checks (see the module docstring)."""
    value = os.environ.get(SKIP_CHECKSUMS_ENV, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"environment variable {SKIP_CHECKSUMS_ENV} must be '0' or '1', got {value!r}")
    return value == "1"


def _existence_checked(cls: type) -> type:
    """A subclass of an md5-checking torchvision dataset class (CIFAR10/100, STL10, Flowers102, SVHN, FER2013) whose
    checks only test
    that each file exists (every md5 set to None, which torchvision's ``check_integrity`` reads as "no sum").

    Registered under its own name in this module, so its instances pickle (DataLoader workers).
    """
    name = f"_{cls.__name__}ExistenceChecked"
    if name not in globals():
        attrs: dict[str, Any] = {"__module__": __name__, "__qualname__": name,
                                 "__doc__": f"torchvision {cls.__name__} with existence-only file checks."}
        for key in ("train_list", "test_list"):
            if hasattr(cls, key):
                attrs[key] = [[filename, None] for filename, _ in getattr(cls, key)]
        if isinstance(getattr(cls, "meta", None), dict):
            attrs["meta"] = {**cls.meta, "md5": None}
        if isinstance(getattr(cls, "_file_dict", None), dict):  # Flowers102: {key: (filename, md5)}
            attrs["_file_dict"] = {key: (filename, None) for key, (filename, _) in cls._file_dict.items()}
        if isinstance(getattr(cls, "_RESOURCES", None), dict):  # FER2013: {key: (filename, md5)}
            attrs["_RESOURCES"] = {key: (filename, None) for key, (filename, _) in cls._RESOURCES.items()}
        if isinstance(getattr(cls, "split_list", None), dict):  # SVHN: {split: [url, filename, md5]}
            attrs["split_list"] = {key: [url, filename, None] for key, (url, filename, _) in cls.split_list.items()}
        globals()[name] = type(name, (cls,), attrs)
    return globals()[name]


class TinyImageNetVal:
    """TinyImageNet's official val split: flat ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``.

    torchvision has no TinyImageNet class, and its ImageFolder would read this folder as a single class
    ("images"). Labels index the sorted wnids of ``wnids.txt`` (next to val/; else the annotated ones), the order
    ImageFolder gives the class folders of train/, so train and val labels agree. Items are
    ``(transform(PIL RGB image), int label)``; ``classes``, ``targets`` and ``samples`` as in ImageFolder.
    """

    def __init__(self, val_dir: str | os.PathLike[str], *, transform: Callable[[Any], Any] | None = None) -> None:
        self.root = str(val_dir)
        self.transform = transform
        folder = Path(val_dir)
        annotations = folder / "val_annotations.txt"
        rows = [line.split() for line in annotations.read_text().splitlines() if line.strip()]
        bad = [i + 1 for i, row in enumerate(rows) if len(row) < 2]
        if bad or not rows:
            where = "empty file" if not rows else f"line {bad[0]} is not"
            raise ValueError(f"{annotations}: expected lines '<file>\\t<wnid>\\t...' ({where}); "
                             "re-extract tiny-imagenet-200.zip")
        wnids_file = folder.parent / "wnids.txt"
        wnids = wnids_file.read_text().split() if wnids_file.is_file() else [row[1] for row in rows]
        self.classes = sorted(set(wnids))
        self.class_to_idx = {wnid: i for i, wnid in enumerate(self.classes)}
        unknown = sorted({row[1] for row in rows} - set(self.class_to_idx))
        if unknown:
            raise ValueError(f"{annotations}: wnids {unknown[:3]} are not in {wnids_file}; "
                             "re-extract tiny-imagenet-200.zip")
        self.samples = [(str(folder / "images" / row[0]), self.class_to_idx[row[1]]) for row in rows]
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[index]
        image = default_loader(path)
        return (image if self.transform is None else self.transform(image)), label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r}, {len(self)} images, {len(self.classes)} classes)"


def _sorted_sun397(dataset: Any) -> Any:
    """SUN397 with its items sorted by path. torchvision lists the images with ``Path.rglob``, whose order is the
    file system's: the same files would get other indices on another machine, so "first N" and seeded subsets
    would not be reproducible. Sorting fixes the order (labels move with their images)."""
    pairs = sorted(zip(dataset._image_files, dataset._labels), key=lambda pair: str(pair[0]))
    dataset._image_files = [path for path, _ in pairs]
    dataset._labels = [label for _, label in pairs]
    return dataset


def _looks_like_missing_data(exc: RuntimeError) -> bool:
    """True for torchvision's "Dataset not found or corrupted" family of errors (not e.g. "Scipy is not found")."""
    message = str(exc).lower()
    return any(s in message for s in ("dataset not found", "corrupted", "not present in the root directory"))


def load_paper_dataset(
    name: str,
    *,
    root: str | os.PathLike[str],
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    split: str | None = None,
    allow_partial: bool | None = None,
) -> tuple[Dataset, list[str]]:
    """Load a paper dataset from ``root``: returns ``(dataset, classnames)`` with ``classnames[label]`` per label.

    The dataset is the torchvision object (TinyImageNet's official val split: :class:`TinyImageNetVal`; SUN397
    with its items sorted by path); items are ``(transform(PIL RGB image), int label)``. ``root`` is
    the data root holding every dataset (layout in the module docstring); ``split`` defaults to the spec's
    evaluation split. Images are not resized or normalised here: pass a transform that produces float
    tensors in [0, 1] (the model code supplies a 224 x 224 one). ``download`` is handed to torchvision
    (ignored for imagenet, tinyimagenet and stanfordcars, which torchvision cannot fetch).

    Raises ValueError for an unknown name or split; FileNotFoundError before any slow work when the dataset's
    folder is absent ("not found") or lacks files or has empty image folders ("incomplete"), naming the expected
    paths, what to put there and where to get the dataset (also when torchvision then finds no image or a
    checksum mismatch); ImportError when pcam lacks h5py. A split with fewer classes or images than its official size
    (:data:`OFFICIAL_SIZES`) raises :class:`IncompleteDatasetError` unless ``allow_partial`` (None: the environment
    variable :data:`ALLOW_PARTIAL_ENV`); :func:`is_partial` then tells the caller.
    """
    spec = _spec(name)
    split = _resolve_split(spec, split)
    data_root = Path(root).expanduser()
    will_download = download and spec.downloadable
    if not will_download:
        _check_files(spec, data_root, split)
    if name == "pcam":
        try:
            import h5py  # noqa: F401 - only checking that torchvision's PCAM can read the files
        except ImportError as exc:
            raise ImportError("pcam is stored as HDF5 files and needs h5py: `pip install h5py`.") from exc
    if spec.needs_rgb:
        transform = _ToRGB(transform)
    expected = _required_paths(name, data_root, split)
    try:
        dataset = _construct(name, data_root, split, transform, will_download)
    except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted" (e.g. md5 mismatch)
        if _looks_like_missing_data(exc):
            raise _missing_error(spec, expected, detail=f"torchvision: {exc}") from exc
        raise
    except FileNotFoundError as exc:  # ImageFolder: no class folders or an empty class folder
        raise _missing_error(spec, expected, detail=str(exc)) from exc
    if len(dataset) == 0:
        raise _missing_error(spec, expected, detail="torchvision found no images there")
    classnames = get_classnames(name, dataset, root=data_root)
    short = _shortfall(name, split, classes=len(set(classnames)), images=len(dataset))
    if short and not _allow_partial(allow_partial):
        raise IncompleteDatasetError(
            f"{name} ({split}): incomplete: {data_root / spec.subdir} holds {short} (official: "
            f"{OFFICIAL_SIZES[name, split].source}); zero-shot accuracy on it is not the papers' task. Fix: complete the "
            f"dataset ({_obtain(spec)}), or allow partial data explicitly (allow_partial=True or {ALLOW_PARTIAL_ENV}=1; "
            f"every result row then says so).")
    return dataset, classnames


def is_partial(name: str, dataset: Any, classnames: Sequence[str], *, split: str | None = None) -> bool:
    """Whether a loaded split has fewer classes or images than its official size (:data:`OFFICIAL_SIZES`)."""
    spec = _spec(name)
    return bool(_shortfall(name, _resolve_split(spec, split), classes=len(set(classnames)), images=len(dataset)))


# ---------------------------------------------------------------------------------- evaluation subsets (ours)

# Evaluation protocols: how a dataset's PIL images become the tensors that are attacked (models.preprocess_for_protocol
# builds the transforms), how the model resizes and normalises them, which class text scores them and in which logit
# units the attacks ascend. One record per protocol, each naming the peer file it follows (docs/PROTOCOLS.md).
PROTOCOL_PIXELS = ("native_small", "resize_small", "open_clip", "mini")  # how the datasets' images are read
PROTOCOL_TEXT = ("tecoa", "tga_zsr", "clip_benchmark")  # which class text: TeCoA's single template (TEMPLATE;
# Country211: its own, template_for), TGA-ZSR's per-dataset templates and class phrases, or CLIP_benchmark's
# per-dataset template ensembles (data files protocol_text/<text>.csv, each row with its source; "{c}" written "{}")
PROTOCOL_TEXT_DIR = Path(__file__).resolve().parent / "protocol_text"  # per-dataset text, one CSV per text source
PROTOCOL_NORMS = ("clip", "imagenet")  # the mean/std inside the model (models.INPUT_NORMS)
PROTOCOL_LOGIT_UNITS = ("scaled", "cosine")  # the logits the attacks ascend: CLIP's scale x cosine, or the cosine


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol: pixels, in-model resize, normalisation, class text, attack logit units, and whose."""

    name: str
    pixels: str
    """PROTOCOL_PIXELS: native_small: CIFAR-10/100 and STL-10 at their native size (ToTensor), every other dataset
    Resize(256) (bilinear) + CenterCrop(224); resize_small: those three resized to 224 x 224 (bilinear) first, the
    others as native_small; open_clip: open_clip's eval transform for every dataset; mini: the mini world's 32 px."""
    resize: str
    """How the model brings an input of another size to its own (models.RESIZE_MODES)."""
    normalisation: str
    """PROTOCOL_NORMS."""
    text: str
    """PROTOCOL_TEXT."""
    logit_units: str
    """PROTOCOL_LOGIT_UNITS (the attacks' objective; accuracy does not depend on it)."""
    follows: str
    """The peer code it follows (repository, file, lines)."""
    differs: str = ""
    """Where ours differs from that code ('' where it does not, as far as measured)."""

    def describe(self) -> str:
        """One line: the protocol's parts and whose they are."""
        return (f"pixels {self.pixels}, {self.resize} resize in the model, {self.normalisation} normalisation, "
                f"{self.text} text, {self.logit_units} logits in the attacks; follows {self.follows}"
                + (f"; differs: {self.differs}" if self.differs else ""))


_TECOA = "cvlab-columbia/ZSRobust4FoundationModel finetuning.py (preprocess / preprocess224, clip_img_preprocessing)"
PROTOCOL_RECORDS: dict[str, Protocol] = {r.name: r for r in (
    Protocol("tecoa", "native_small", "bicubic", "clip", "tecoa", "scaled", _TECOA + ", template 'This is a photo of "
             "a {}'", "Country211 takes 'A photo I took in {}.' (TeCoA's replaced torchvision Country211)"),
    Protocol("tga_zsr", "resize_small", "bicubic", "clip", "tga_zsr", "scaled", "zhyblue424/TGA-ZSR utils.py "
             "`preprocess` (Resize((224, 224)) for CIFAR-10/100 and STL-10), else as tecoa; text: its replace/datasets/"
             "*.py prompt templates (protocol_text/tga_zsr.csv, each row's source), 'This is a photo of a {}' for the "
             "others (utils.py get_text_prompts_val)",
             "class names: ours (TeCoA's refinement) put into its templates, not its own class-name clean-up; "
             "ImageNet / TinyImageNet names: open_clip's, not its imagenet_classes_names.txt"),
    Protocol("pmg_aft", "native_small", "bicubic", "imagenet", "tecoa", "cosine", "serendipity1122/Pre-trained-Model-"
             "Guided-Fine-Tuning-for-Zero-Shot-Adversarial-Robustness PMG_AFT.py a53fdd8: lines 119-134 (ImageNet "
             "mean/std, bicubic upsample to 224), 245-257 (preprocess, preprocess224), 659-669 (cosine logits in its "
             "validate and attack_pgd_noprompt), template 'This is a photo of a {}'", ""),
    Protocol("clip", "open_clip", "bicubic", "clip", "tecoa", "scaled", "open_clip.image_transform(is_train=False)",
             "TeCoA's single template (clip_benchmark: the same pixels with CLIP_benchmark's template ensembles)"),
    Protocol("clip_benchmark", "open_clip", "bicubic", "clip", "clip_benchmark", "scaled", "LAION-AI/CLIP_benchmark "
             "(RobustVLM's ViT-B/32 table): the model's open_clip eval transform, clip_benchmark/datasets/"
             "en_zeroshot_classification_templates.json ensembles (class embeddings averaged over templates)",
             "class names: ours, not its en_classnames.json; Caltech256 and TinyImageNet (not in CLIP_benchmark) take "
             "TeCoA's template"),
    Protocol("mini", "mini", "bilinear", "clip", "tecoa", "scaled", "ours (the mini profile)", ""),
)}
PROTOCOLS: dict[str, str] = {
    "tecoa": "TeCoA evaluation (the paper profile's default): CIFAR-10/100 and STL-10 at their native "
             "resolution (32 / 96 px, ToTensor only) and resized bicubically inside the model; every other dataset "
             "Resize(256) (bilinear) + CenterCrop(224); CLIP's normalisation and logit scale",
    "tga_zsr": "TGA-ZSR: CIFAR-10/100 and STL-10 resized to 224 x 224 (bilinear) before the attack; every other "
               "dataset as tecoa",
    "pmg_aft": "PMG-AFT's released code: tecoa's pixels and resize, ImageNet's mean/std inside the model, attacks on "
               "raw cosine logits (no logit scale)",
    "clip": "open_clip's own evaluation transform for every dataset (bicubic Resize(224) + CenterCrop(224))",
    "clip_benchmark": "CLIP_benchmark (RobustVLM's table): clip's pixels, per-dataset template ensembles",
    "mini": "the mini profile: world images rendered at 32 px (tensors pass through, PIL resized to 32 x 32)",
}
"""Each protocol's one-line meaning (its record: PROTOCOL_RECORDS)."""
NATIVE_RESOLUTION: dict[str, int] = {"cifar10": 32, "cifar100": 32, "stl10": 96}  # attacked at this size (tecoa)
DEFAULT_PROTOCOL = "tecoa"  # the paper profile's: TeCoA's protocol (PMG-AFT's own reads pixels the same: pmg_aft)
SAMPLING_RULES = ("random", "balanced", "first")
"""How a paper-scale evaluation subset is drawn (rules of ours; see :func:`subset_indices`)."""

DEFAULT_SAMPLING = "random"


def _protocol_text(text: str) -> dict[str, list[dict[str, str]]]:
    """{dataset: rows, one per template} of a per-dataset text file (protocol_text/<text>.csv: dataset, template,
    class_phrases, source); {} for TeCoA's single template."""
    if text == "tecoa":
        return {}
    rows: dict[str, list[dict[str, str]]] = {}
    with open(PROTOCOL_TEXT_DIR / f"{text}.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(row["dataset"], []).append(row)
    unknown = sorted(set(rows) - set(PAPER_DATASETS))
    if unknown:
        raise ValueError(f"protocol_text/{text}.csv names unknown datasets {unknown}")
    return rows


def text_for(dataset: str, protocol: str, classnames: Sequence[str]) -> tuple[list[str], list[str]]:
    """(class names, templates) a protocol scores `dataset` with: TeCoA's single template (template_for) under
    tecoa-text protocols (and for a "custom" preprocess); under tga_zsr its per-dataset template, or its whole
    class phrases with the template "{}" (PCAM), else TeCoA's template, as TGA-ZSR's get_text_prompts_val; under
    clip_benchmark the dataset's template ensemble (class embeddings average over the templates)."""
    record = PROTOCOL_RECORDS.get(protocol)
    rows = _protocol_text(record.text).get(dataset) if record is not None else None
    if not rows:
        return list(classnames), [template_for(dataset)]
    phrases = [p for p in rows[0]["class_phrases"].split("|") if p]
    if phrases and len(phrases) != len(classnames):
        raise ValueError(f"protocol_text/{record.text}.csv: {dataset} has {len(phrases)} class phrases for "
                         f"{len(classnames)} classes")
    return (phrases or list(classnames)), [row["template"] for row in rows]


def check_sampling(sampling: str) -> str:
    """Return ``sampling`` if it is one of :data:`SAMPLING_RULES`, else raise ValueError listing them."""
    if sampling not in SAMPLING_RULES:
        raise ValueError(f"unknown sampling rule {sampling!r}; choose one of {', '.join(SAMPLING_RULES)}")
    return sampling


def dataset_labels(dataset: Any) -> list[int]:
    """Every item's integer label in item order, read from the dataset's metadata: no image is decoded.

    Works for every loader :func:`load_paper_dataset` returns (torchvision 0.29 keeps them in ``targets``,
    ``labels``, ``y``, ``_labels`` or ``_samples``; PCAM's are read from its ``_y.h5`` file); TypeError otherwise.
    """
    values: Any = None
    for attr in ("targets", "labels", "y", "_labels"):
        values = getattr(dataset, attr, None)
        if values is not None:
            break
    if values is None and getattr(dataset, "_samples", None) is not None:  # StanfordCars: [(path, label), ...]
        values = [label for _, label in dataset._samples]
    if values is None and type(dataset).__name__ == "PCAM":
        targets = dataset._FILES[dataset._split]["targets"][0]
        with dataset.h5py.File(dataset._base_folder / targets) as f:
            values = f["y"][:, 0, 0, 0]
    if values is None:
        raise TypeError(f"{type(dataset).__name__}: no label list found (targets, labels, y, _labels, _samples)")
    labels = [int(v) for v in values]
    if len(labels) != len(dataset):
        raise ValueError(f"{type(dataset).__name__}: {len(labels)} labels for {len(dataset)} items")
    return labels


def _rng(name: str, seed: int) -> Any:
    """numpy Generator fixed by (seed, dataset name): each dataset gets its own stream, stable across runs."""
    import numpy as np

    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def sample_order(name: str, dataset: Any, *, sampling: str = DEFAULT_SAMPLING, seed: int = 0) -> list[int]:
    """The fixed order of ``dataset``'s indices under a sampling rule (ours); :func:`subset_indices` takes a prefix.

    * ``"random"``: a permutation seeded by (``seed``, ``name``).
    * ``"balanced"``: classes in a seeded order, each class's items in a seeded order, then round-robin: item k of
      every class (that has one) before item k + 1 of any. Needs labels (:func:`dataset_labels`), no images.
    * ``"first"``: the dataset's own order.
    """
    check_sampling(sampling)
    size = len(dataset)
    if sampling == "first":
        return list(range(size))
    rng = _rng(name, seed)
    if sampling == "random":
        return [int(i) for i in rng.permutation(size)]
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(dataset_labels(dataset)):
        by_class.setdefault(label, []).append(index)
    classes = sorted(by_class)
    queues = [[by_class[c][int(i)] for i in rng.permutation(len(by_class[c]))] for c in classes]
    queues = [queues[int(i)] for i in rng.permutation(len(queues))]
    longest = max((len(q) for q in queues), default=0)
    return [q[k] for k in range(longest) for q in queues if k < len(q)]


def subset_indices(name: str, dataset: Any, *, n: int, sampling: str = DEFAULT_SAMPLING, seed: int = 0) -> list[int]:
    """The indices of a paper-scale evaluation subset of ``min(n, len(dataset))`` items (a rule of ours).

    The first n of :func:`sample_order`: fixed per dataset, rule and seed, and a smaller n is always a prefix of a
    larger one (``subset_indices(..., n=10) == subset_indices(..., n=40)[:10]``). ``"random"`` (the default) is an
    unbiased sample of the full test set whose accuracy the papers report; ``"balanced"`` covers every class once
    n reaches the number of classes; ``"first"`` is the old first-N (a few classes of a class-sorted dataset).
    """
    check_sampling(sampling)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return sample_order(name, dataset, sampling=sampling, seed=seed)[:n]


# ----------------------------------------------------------------------------------------- class names


def _refine(name: str) -> str:
    """TeCoA's ``refine_classname``: lower-case, ``_`` and ``-`` to spaces (whitespace collapsed)."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def _imagenet_classnames() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def _imagenet_wnids(imagenet_dir: Path) -> list[str] | None:
    """All 1000 ImageNet wnids in class-index (sorted) order, or None if nothing under ``imagenet_dir`` says.

    Sources, in order: torchvision's ``meta.bin`` (created from the devkit archive if only that is present,
    as ``torchvision.datasets.ImageNet`` does), then a ``val/`` or ``train/`` folder with exactly 1000
    wnid-named class folders.
    """
    from torchvision.datasets.imagenet import META_FILE, load_meta_file, parse_devkit_archive

    if not (imagenet_dir / META_FILE).is_file() and (imagenet_dir / _IMAGENET_DEVKIT).is_file():
        parse_devkit_archive(str(imagenet_dir))
    if (imagenet_dir / META_FILE).is_file():
        wnid_to_classes = load_meta_file(str(imagenet_dir))[0]
        return sorted(wnid_to_classes)
    for split in ("val", "train"):
        folder = imagenet_dir / split
        if folder.is_dir():
            wnids = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
            if len(wnids) == 1000 and all(_WNID.match(w) for w in wnids):
                return wnids
    return None


def _words_names(wnids: Sequence[str], words_file: Path | None) -> list[str] | None:
    """The first synonym of each wnid in TinyImageNet's ``words.txt`` (``<wnid>\\t<synonyms, ...>``), or None if the
    file is absent or lacks one of the wnids."""
    if words_file is None or not words_file.is_file():
        return None
    words = {}
    for line in words_file.read_text().splitlines():
        wnid, _, text = line.partition("\t")
        words[wnid.strip()] = text.split(",")[0].strip()
    if not all(words.get(w) for w in wnids):
        return None
    return [words[w] for w in wnids]


def _wnids_to_names(wnids: Sequence[str], imagenet_dir: Path, *, what: str,
                    words_file: Path | None = None) -> list[str]:
    """ImageNet names (open_clip) for ``wnids``; else the first synonyms of ``words_file`` (TinyImageNet's
    words.txt), else the wnids themselves; a warning in both fallbacks."""
    all_wnids = _imagenet_wnids(imagenet_dir)
    names = _imagenet_classnames()
    if all_wnids is not None and len(all_wnids) == len(names):
        index = {wnid: i for i, wnid in enumerate(all_wnids)}
        unknown = [w for w in wnids if w not in index]
        if not unknown:
            return [names[index[w]] for w in wnids]
        reason = f"{len(unknown)} of its wnids (e.g. {unknown[0]}) are not ImageNet-1k classes"
    else:
        reason = (
            f"no ImageNet wnid list was found in {imagenet_dir} (meta.bin, {_IMAGENET_DEVKIT}, or val/ with "
            "1000 wnid folders)"
        )
    words = _words_names(wnids, words_file)
    if words is not None:
        warnings.warn(f"{what}: {reason}; using the first synonyms of {words_file} as class names instead of "
                      "open_clip's curated ImageNet names. Provide the ImageNet metadata to get those.", stacklevel=3)
        return words
    warnings.warn(
        f"{what}: {reason}; falling back to the wnid folder names as class names, which ruins zero-shot "
        "accuracy. Provide the ImageNet metadata to get open_clip's names.",
        stacklevel=3,
    )
    return list(wnids)


def country_names(codes: Sequence[str]) -> list[str]:
    """Country211's class names: each ISO 3166 alpha-2 code (its folder name) named by pycountry, as TeCoA's code
    does, taking pycountry's common name where it has one ("South Korea", not "Korea, Republic of"); XK (not in
    ISO 3166) is "Kosovo" as in TeCoA's code. ValueError for a code pycountry does not know."""
    import pycountry

    names = []
    for code in codes:
        if code == "XK":
            names.append("Kosovo")
            continue
        country = pycountry.countries.get(alpha_2=code)
        if country is None:
            raise ValueError(f"country211: folder {code!r} is not an ISO 3166 alpha-2 code pycountry knows; "
                             "re-extract country211.tgz")
        names.append(getattr(country, "common_name", None) or country.name)
    return names


def _classnames_from_dataset(name: str, dataset: Any) -> list[str]:
    raw = getattr(dataset, "classes", None)
    if raw is None:
        raw = getattr(dataset, "categories", None)  # Caltech101/256
    if raw is None:
        raise ValueError(f"{name}: {type(dataset).__name__} exposes neither .classes nor .categories")
    raw = [str(c) for c in raw]
    if name == "country211":  # ISO codes -> country names (TeCoA's code: pycountry), not refined
        return country_names(raw)
    if name == "caltech256":  # "001.ak47", "063.electric-guitar-101" -> "ak47", "electric-guitar" (as TeCoA)
        raw = [re.sub(r"^\d+\.", "", c).removesuffix("-101") for c in raw]
    elif name == "sun397":  # "apartment_building/outdoor" -> "apartment building outdoor"
        raw = [c.replace("/", " ") for c in raw]
    elif name == "eurosat":  # "AnnualCrop" -> "Annual Crop"
        raw = [re.sub(r"(?<=[a-z])(?=[A-Z])", " ", c) for c in raw]
    names = [_refine(c) for c in raw]
    if name == "caltech101":
        names = [_CALTECH101_RENAMES.get(c, c) for c in names]
    return names


def get_classnames(
    name: str,
    dataset: Dataset | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Class names for ``name``, indexed like ``dataset``'s integer labels (``len`` = number of classes).

    * imagenet: open_clip's ``IMAGENET_CLASSNAMES`` (1000, ``"tench"`` first) when ``dataset`` is None or has
      all 1000 classes; for a subset, each folder wnid is mapped through the ImageNet wnid list.
    * tinyimagenet: its wnids (from ``dataset`` or the val split under ``root``) mapped to open_clip's
      ImageNet names via the wnid list found in ``<root>/imagenet/`` (torchvision ``meta.bin``, the devkit
      archive, or a ``val/`` with 1000 wnid folders); without one, the first synonyms of its ``words.txt``
      (official layout), else the wnids themselves (with a warning either way).
    * pcam: TeCoA's two class phrases; flowers102: torchvision's ``Flowers102.classes``.
    * validation datasets (module docstring): gtsrb, svhn and fer2013 names of ours (no files needed); country211:
      its ISO-code folders named by pycountry (:func:`country_names`).
    * others: the dataset's ``classes``/``categories`` refined like TeCoA (lower-case, ``_``/``-`` to spaces),
      plus: Caltech256 drops the ``NNN.`` prefix and ``-101`` suffix, SUN397 turns ``/`` into a space, EuroSAT
      splits CamelCase, Caltech101's face folders become "off-center face"/"centered face".

    Without ``dataset``, names that depend on files on disk are read from ``root`` (the data root), loading
    the dataset if needed; ValueError if neither is given for such a dataset.
    """
    spec = _spec(name)
    data_root = None if root is None else Path(root).expanduser()
    if spec.classnames:
        return list(spec.classnames)
    if name == "flowers102" and dataset is None:
        from torchvision.datasets import Flowers102

        return [_refine(c) for c in Flowers102.classes]
    if name == "imagenet":
        if dataset is None:
            return _imagenet_classnames()
        wnids = list(getattr(dataset, "wnids", None) or dataset.classes)
        dataset_root = Path(dataset.root)
        imagenet_dir = data_root / "imagenet" if data_root is not None else (
            dataset_root if hasattr(dataset, "wnids") else dataset_root.parent
        )
        if len(wnids) == 1000 and _imagenet_wnids(imagenet_dir) in (None, sorted(wnids)):
            return _imagenet_classnames()  # the full set: label i is the i-th sorted wnid
        return _wnids_to_names(wnids, imagenet_dir, what="imagenet")
    if name == "tinyimagenet":
        if dataset is not None:
            wnids = list(dataset.classes)
            tiny_dir = Path(dataset.root).parent  # the dataset's root is <data root>/<tinyimagenet folder>/<split>
            data_root = tiny_dir.parent if data_root is None else data_root
        elif data_root is not None:
            _check_files(spec, data_root, spec.split)
            tiny_dir = _dataset_dir(name, data_root)
            folder = tiny_dir / spec.split
            wnids = (TinyImageNetVal(folder).classes if _tiny_val_is_official(folder)
                     else sorted(entry.name for entry in os.scandir(folder) if entry.is_dir()))
        else:
            raise ValueError("tinyimagenet class names depend on its folders: pass dataset= or root=")
        return _wnids_to_names(wnids, data_root / "imagenet", what="tinyimagenet", words_file=tiny_dir / "words.txt")
    if dataset is None:
        if data_root is None:
            raise ValueError(f"{name} class names are read from the dataset files: pass dataset= or root=")
        return load_paper_dataset(name, root=data_root)[1]
    return _classnames_from_dataset(name, dataset)


# ------------------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    """The data doctor's parser (plain argparse: this module sits below config.cli_parser; its help states the
    one default by hand)."""
    parser = argparse.ArgumentParser(prog="python -m nbhelpers.paper_data",
                                     description="Data doctor: which paper datasets are under ROOT, which are missing "
                                                 "or incomplete, what goes where and where to get it.")
    parser.add_argument("root", help="the data root (the folder that holds every dataset's folder)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", choices=list(PAPER_DATASETS),
                        help="check only these (default: the 16 reported datasets, then 06's validation datasets)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nbhelpers.paper_data ROOT``: print the data doctor's report; exit 0 if every dataset checked is
    found, 1 otherwise."""
    args = build_parser().parse_args(argv)
    statuses = diagnose_data_root(args.root, datasets=args.datasets)
    print(format_data_report(statuses, root=Path(args.root).expanduser()))
    return 0 if all(s.status == "found" for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
