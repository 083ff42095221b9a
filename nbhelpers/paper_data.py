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
    <root>/tinyimagenet/{train,val}/<wnid>/    tinyimagenet (ImageFolder)

TinyImageNet: the official ``tiny-imagenet-200.zip`` keeps ``train/<wnid>/images/*.JPEG`` (fine for
ImageFolder, which walks sub-folders) but stores the validation images flat in ``val/images/`` with labels in
``val/val_annotations.txt``. Re-arrange them into class folders once, e.g.::

    src = Path("tiny-imagenet-200/val")
    for line in (src / "val_annotations.txt").read_text().splitlines():
        fname, wnid = line.split("\\t")[:2]
        (dst := Path(root, "tinyimagenet/val", wnid)).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "images" / fname, dst / fname)

Caltech101, Caltech256, SUN397 and EuroSAT have no official split in torchvision; as in TeCoA's code the
whole set is evaluated (``split="all"``).

Checksums: torchvision compares CIFAR-10/100's and STL-10's files with the md5 sums of the official archives.
Setting the environment variable ``TIMA_SKIP_CHECKSUMS=1`` (:data:`SKIP_CHECKSUMS_ENV`) makes those loaders check
that each file exists instead; everything else (unpickling, decoding, labels) is unchanged. It is meant for
small test fixtures in the real layouts (``tests/paper_fixtures.py``), whose bytes cannot match the official sums.
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = [
    "PAPER_DATASETS",
    "SKIP_CHECKSUMS_ENV",
    "TEMPLATE",
    "PaperDatasetSpec",
    "available_paper_datasets",
    "check_dataset_files",
    "get_classnames",
    "list_paper_datasets",
    "load_paper_dataset",
]

# TeCoA's finetuning.py uses ``template = 'This is a photo of a {}'`` -- no trailing period -- and PMG-AFT
# copies it; we keep it verbatim so that text embeddings match the baselines.
TEMPLATE = "This is a photo of a {}"

SKIP_CHECKSUMS_ENV = "TIMA_SKIP_CHECKSUMS"
"""Environment variable: "1" makes the md5-checked loaders (cifar10, cifar100, stl10) test file existence only."""


@dataclass(frozen=True)
class PaperDatasetSpec:
    """Where one paper-scale dataset lives under the data root and how torchvision reads it."""

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


_NO_DOWNLOAD = " torchvision cannot download it: get it by hand."


def _download_hint(folder: str) -> str:
    return f" Or pass download=True on a machine with internet (torchvision creates <root>/{folder})."


_SPEC_LIST: tuple[PaperDatasetSpec, ...] = (
    PaperDatasetSpec(
        "cifar10", "CIFAR10", "test", True, "cifar-10-batches-py",
        "Extract cifar-10-python.tar.gz so that <root>/cifar-10-batches-py/ holds data_batch_1..5, test_batch "
        "and batches.meta." + _download_hint("cifar-10-batches-py"),
    ),
    PaperDatasetSpec(
        "cifar100", "CIFAR100", "test", True, "cifar-100-python",
        "Extract cifar-100-python.tar.gz so that <root>/cifar-100-python/ holds train, test and meta."
        + _download_hint("cifar-100-python"),
    ),
    PaperDatasetSpec(
        "stl10", "STL10", "test", True, "stl10_binary",
        "Extract stl10_binary.tar.gz so that <root>/stl10_binary/ holds {train,test}_{X,y}.bin, unlabeled_X.bin "
        "and class_names.txt (torchvision checks every file)." + _download_hint("stl10_binary"),
    ),
    PaperDatasetSpec(
        "imagenet", "ImageFolder", "val", True, "imagenet",
        "Put the ImageNet-1k validation images in class folders: <root>/imagenet/val/<wnid>/*.JPEG (1000 folders). "
        "Optionally add ILSVRC2012_devkit_t12.tar.gz or torchvision's meta.bin to <root>/imagenet/ to read it "
        "with torchvision.datasets.ImageNet." + _NO_DOWNLOAD,
    ),
    PaperDatasetSpec(
        "caltech101", "Caltech101", "all", True, "caltech101",
        "Extract 101_ObjectCategories.tar.gz to <root>/caltech101/101_ObjectCategories/<category>/image_*.jpg "
        "(no official split: the whole set is used)." + _download_hint("caltech101"),
    ),
    PaperDatasetSpec(
        "caltech256", "Caltech256", "all", True, "caltech256",
        "Extract 256_ObjectCategories.tar to <root>/caltech256/256_ObjectCategories/<NNN.category>/*.jpg "
        "(no official split: the whole set is used)." + _download_hint("caltech256"),
    ),
    PaperDatasetSpec(
        "oxfordpet", "OxfordIIITPet", "test", True, "oxford-iiit-pet",
        "Extract images.tar.gz and annotations.tar.gz into <root>/oxford-iiit-pet/ (images/, annotations/test.txt)."
        + _download_hint("oxford-iiit-pet"),
    ),
    PaperDatasetSpec(
        "flowers102", "Flowers102", "test", True, "flowers-102",
        "Put 102flowers.tgz's jpg/ folder, imagelabels.mat and setid.mat into <root>/flowers-102/."
        + _download_hint("flowers-102"),
    ),
    PaperDatasetSpec(
        "fgvc_aircraft", "FGVCAircraft", "test", True, "fgvc-aircraft-2013b",
        "Extract fgvc-aircraft-2013b.tar.gz so that <root>/fgvc-aircraft-2013b/data/ holds images/, variants.txt "
        "and images_variant_test.txt." + _download_hint("fgvc-aircraft-2013b"),
    ),
    PaperDatasetSpec(
        "stanfordcars", "StanfordCars", "test", True, "stanford_cars",
        "Put devkit/ (with cars_meta.mat), cars_test/ and cars_test_annos_withlabels.mat into <root>/stanford_cars/."
        " The original URL is dead, so" + _NO_DOWNLOAD.lstrip(),
    ),
    PaperDatasetSpec(
        "sun397", "SUN397", "all", True, "SUN397",
        "Extract SUN397.tar.gz so that <root>/SUN397/ holds ClassName.txt and the a/, b/, ... image folders "
        "(no official split in torchvision: the whole set is used)." + _download_hint("SUN397"),
    ),
    PaperDatasetSpec(
        "food101", "Food101", "test", True, "food-101",
        "Extract food-101.tar.gz so that <root>/food-101/ holds images/ and meta/test.json."
        + _download_hint("food-101"),
    ),
    PaperDatasetSpec(
        "eurosat", "EuroSAT", "all", True, "eurosat",
        "Extract EuroSAT.zip (RGB) so that <root>/eurosat/2750/<Class>/*.jpg exists "
        "(no official split: the whole set is used)." + _download_hint("eurosat"),
    ),
    PaperDatasetSpec(
        "dtd", "DTD", "test", True, "dtd",
        "Extract dtd-r1.0.1.tar.gz into <root>/dtd/ so that <root>/dtd/dtd/images/ and <root>/dtd/dtd/labels/test1.txt "
        "exist (partition 1)." + _download_hint("dtd"),
    ),
    PaperDatasetSpec(
        "pcam", "PCAM", "test", True, "pcam",
        "Put the decompressed camelyonpatch_level_2_split_test_{x,y}.h5 files into <root>/pcam/ (reading them needs "
        "`pip install h5py`)." + _download_hint("pcam"),
    ),
    PaperDatasetSpec(
        "tinyimagenet", "ImageFolder", "val", False, "tinyimagenet",
        "Put TinyImageNet in class folders: <root>/tinyimagenet/train/<wnid>/... and "
        "<root>/tinyimagenet/val/<wnid>/... (the official val/images/ must be re-arranged with "
        "val_annotations.txt, see this module's docstring)."
        + _NO_DOWNLOAD,
    ),
)

PAPER_DATASETS: dict[str, PaperDatasetSpec] = {spec.name: spec for spec in _SPEC_LIST}
"""The 16 paper-scale datasets by key: TinyImageNet (fine-tuning set) plus the 15 zero-shot ones."""

# Splits each loader accepts; the first one is the declared evaluation split.
_SPLITS: dict[str, tuple[str, ...]] = {
    "cifar10": ("test", "train"),
    "cifar100": ("test", "train"),
    "stl10": ("test", "train"),
    "imagenet": ("val", "train"),
    "caltech101": ("all",),
    "caltech256": ("all",),
    "oxfordpet": ("test", "trainval"),
    "flowers102": ("test", "val", "train"),
    "fgvc_aircraft": ("test", "val", "train", "trainval"),
    "stanfordcars": ("test", "train"),
    "sun397": ("all",),
    "food101": ("test", "train"),
    "eurosat": ("all",),
    "dtd": ("test", "val", "train"),
    "pcam": ("test", "val", "train"),
    "tinyimagenet": ("val", "train"),
}

# Datasets torchvision cannot fetch: ``download=True`` is ignored and files are always checked up front.
_NOT_DOWNLOADABLE = frozenset({"imagenet", "tinyimagenet", "stanfordcars"})

# Datasets whose torchvision loader returns images in their stored mode (Caltech has grayscale JPEGs).
_NEEDS_RGB = frozenset({"caltech101", "caltech256"})

# PCAM ships no class names; TeCoA's PCAM prompts are "This is a photo of healthy lymph node tissue." and
# "This is a photo of lymph node tumor tissue.", whose class parts are these (label 0, label 1).
_PCAM_CLASSNAMES = ("healthy lymph node tissue", "lymph node tumor tissue")

# Caltech101's two face folders differ only in framing; CLIP's evaluation names them like this.
_CALTECH101_RENAMES = {"faces": "off-center face", "faces easy": "centered face"}

_IMAGENET_DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
_IMAGENET_VAL_TAR = "ILSVRC2012_img_val.tar"
_WNID = re.compile(r"^n\d{8}$")


def list_paper_datasets(*, zero_shot_only: bool = False) -> list[str]:
    """Dataset keys in paper order; with ``zero_shot_only`` the 15 zero-shot ones (no TinyImageNet)."""
    return [name for name, spec in PAPER_DATASETS.items() if spec.zero_shot or not zero_shot_only]


def _spec(name: str) -> PaperDatasetSpec:
    try:
        return PAPER_DATASETS[name]
    except KeyError:
        allowed = ", ".join(PAPER_DATASETS)
        raise ValueError(f"unknown paper dataset {name!r}; allowed names: {allowed}") from None


def _resolve_split(spec: PaperDatasetSpec, split: str | None) -> str:
    split = spec.split if split is None else split
    allowed = _SPLITS[spec.name]
    if split not in allowed:
        raise ValueError(f"{spec.name}: unknown split {split!r}; allowed: {', '.join(allowed)}")
    return split


def _required_paths(name: str, root: Path, split: str) -> list[Path]:
    """Files/folders torchvision needs for ``name``/``split`` under ``root`` (checked without hashing)."""
    if name == "cifar10":
        base = root / "cifar-10-batches-py"
        return [base / f for f in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")]
    if name == "cifar100":
        base = root / "cifar-100-python"
        return [base / f for f in ("train", "test", "meta")]
    if name == "stl10":
        base = root / "stl10_binary"
        files = ("train_X.bin", "train_y.bin", "unlabeled_X.bin", "test_X.bin", "test_y.bin", "class_names.txt")
        return [base / f for f in files]
    if name in ("imagenet", "tinyimagenet"):
        return [root / name / split]
    if name == "caltech101":
        return [root / "caltech101" / "101_ObjectCategories"]
    if name == "caltech256":
        return [root / "caltech256" / "256_ObjectCategories"]
    if name == "oxfordpet":
        base = root / "oxford-iiit-pet"
        return [base / "images", base / "annotations" / f"{split}.txt"]
    if name == "flowers102":
        base = root / "flowers-102"
        return [base / "jpg", base / "imagelabels.mat", base / "setid.mat"]
    if name == "fgvc_aircraft":
        data = root / "fgvc-aircraft-2013b" / "data"
        return [data / "images", data / "variants.txt", data / f"images_variant_{split}.txt"]
    if name == "stanfordcars":
        base = root / "stanford_cars"
        if split == "train":
            return [base / "devkit" / "cars_meta.mat", base / "devkit" / "cars_train_annos.mat", base / "cars_train"]
        return [base / "devkit" / "cars_meta.mat", base / "cars_test_annos_withlabels.mat", base / "cars_test"]
    if name == "sun397":
        return [root / "SUN397" / "ClassName.txt"]
    if name == "food101":
        base = root / "food-101"
        return [base / "images", base / "meta" / f"{split}.json"]
    if name == "eurosat":
        return [root / "eurosat" / "2750"]
    if name == "dtd":
        data = root / "dtd" / "dtd"
        return [data / "images", data / "labels" / f"{split}1.txt"]
    if name == "pcam":
        stem = "valid" if split == "val" else split
        base = root / "pcam"
        return [base / f"camelyonpatch_level_2_split_{stem}_{xy}.h5" for xy in ("x", "y")]
    raise AssertionError(f"no layout for {name!r}")  # pragma: no cover - every spec has a branch


def _missing_error(spec: PaperDatasetSpec, paths: Sequence[Path], detail: str = "") -> FileNotFoundError:
    """The FileNotFoundError users see: dataset name, exact paths under the root, and the spec's hint."""
    listed = ", ".join(str(p) for p in paths)
    if detail:
        return FileNotFoundError(f"{spec.name}: could not read the files expected at {listed} ({detail}). {spec.hint}")
    return FileNotFoundError(f"{spec.name}: not found: {listed}. {spec.hint}")


def check_dataset_files(name: str, *, root: str | os.PathLike[str], split: str | None = None) -> None:
    """Raise FileNotFoundError (paths + what to put there) unless ``name``'s ``split`` files are under ``root``.

    Only ``stat`` calls: instant, reads nothing. ValueError for an unknown name or split.
    """
    spec = _spec(name)
    _check_files(spec, Path(root).expanduser(), _resolve_split(spec, split))


def available_paper_datasets(root: str | os.PathLike[str], *, split: str | None = None) -> list[str]:
    """The paper datasets (paper order) whose files for ``split`` (default: each one's evaluation split) are
    present under ``root``; datasets without such a split are left out."""
    present = []
    for name in PAPER_DATASETS:
        if split is not None and split not in _SPLITS[name]:
            continue
        try:
            check_dataset_files(name, root=root, split=split)
        except FileNotFoundError:
            continue
        present.append(name)
    return present


def _check_files(spec: PaperDatasetSpec, root: Path, split: str) -> None:
    """Raise FileNotFoundError naming every missing required path; only ``stat`` calls, so it is instant."""
    required = _required_paths(spec.name, root, split)
    if spec.name == "imagenet" and not required[0].is_dir():
        # torchvision's ImageNet can build val/ itself from the official archives.
        archives = [root / "imagenet" / _IMAGENET_DEVKIT, root / "imagenet" / _IMAGENET_VAL_TAR]
        if split == "val" and all(p.is_file() for p in archives):
            return
    missing = [p for p in required if not p.exists()]
    if missing:
        raise _missing_error(spec, missing)


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
    """A subclass of an md5-checking torchvision dataset class (CIFAR10/100, STL10) whose checks only test that
    each file exists (every md5 set to None, which torchvision's ``check_integrity`` reads as "no sum").

    Registered under its own name in this module, so its instances pickle (DataLoader workers).
    """
    name = f"_{cls.__name__}ExistenceChecked"
    if name not in globals():
        attrs: dict[str, Any] = {"__module__": __name__, "__qualname__": name,
                                 "__doc__": f"torchvision {cls.__name__} with existence-only file checks."}
        for key in ("train_list", "test_list"):
            attrs[key] = [[filename, None] for filename, _ in getattr(cls, key)]
        if isinstance(getattr(cls, "meta", None), dict):
            attrs["meta"] = {**cls.meta, "md5": None}
        globals()[name] = type(name, (cls,), attrs)
    return globals()[name]


def _construct(name: str, root: Path, split: str, transform: Callable[[Any], Any] | None, download: bool) -> Any:
    """Build the torchvision dataset object for ``name`` (no checks; see :func:`load_paper_dataset`)."""
    import torchvision.datasets as tvd

    kw: dict[str, Any] = {"transform": transform}
    if name not in _NOT_DOWNLOADABLE:
        kw["download"] = download
    skip = _skip_checksums() and not download
    if name in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        return (_existence_checked(cls) if skip else cls)(root, train=split == "train", **kw)
    if name == "stl10" and skip:
        return _existence_checked(tvd.STL10)(root, split=split, **kw)
    if name == "imagenet":
        imagenet_dir = root / "imagenet"
        if _use_torchvision_imagenet(imagenet_dir):
            return tvd.ImageNet(imagenet_dir, split=split, **kw)
        return tvd.ImageFolder(imagenet_dir / split, **kw)
    if name == "tinyimagenet":
        return tvd.ImageFolder(root / "tinyimagenet" / split, **kw)
    if name == "caltech101":
        return tvd.Caltech101(root, target_type="category", **kw)
    if name in ("caltech256", "sun397", "eurosat"):
        return getattr(tvd, PAPER_DATASETS[name].torchvision_class)(root, **kw)
    # The remaining classes all take split= with our split names.
    return getattr(tvd, PAPER_DATASETS[name].torchvision_class)(root, split=split, **kw)


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
) -> tuple[Dataset, list[str]]:
    """Load a paper dataset from ``root``: returns ``(dataset, classnames)`` with ``classnames[label]`` per label.

    The dataset is the torchvision object; items are ``(transform(PIL RGB image), int label)``. ``root`` is
    the data root holding every dataset (layout in the module docstring); ``split`` defaults to the spec's
    evaluation split. Images are not resized or normalised here: pass a transform that produces float
    tensors in [0, 1] (the model code supplies a 224 x 224 one). ``download`` is handed to torchvision
    (ignored for imagenet, tinyimagenet and stanfordcars, which torchvision cannot fetch).

    Raises ValueError for an unknown name or split, FileNotFoundError (before any slow work) when the files
    are missing, naming the expected paths and what to put there, and ImportError when pcam lacks h5py.
    """
    spec = _spec(name)
    split = _resolve_split(spec, split)
    data_root = Path(root).expanduser()
    will_download = download and name not in _NOT_DOWNLOADABLE
    if not will_download:
        _check_files(spec, data_root, split)
    if name == "pcam":
        try:
            import h5py  # noqa: F401 - only checking that torchvision's PCAM can read the files
        except ImportError as exc:
            raise ImportError("pcam is stored as HDF5 files and needs h5py: `pip install h5py`.") from exc
    if name in _NEEDS_RGB:
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
    return dataset, get_classnames(name, dataset, root=data_root)


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


def _wnids_to_names(wnids: Sequence[str], imagenet_dir: Path, *, what: str) -> list[str]:
    """ImageNet names (open_clip) for ``wnids``; wnids themselves, with a warning, where no mapping exists."""
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
    warnings.warn(
        f"{what}: {reason}; falling back to the wnid folder names as class names, which ruins zero-shot "
        "accuracy. Provide the ImageNet metadata to get open_clip's names.",
        stacklevel=3,
    )
    return list(wnids)


def _classnames_from_dataset(name: str, dataset: Any) -> list[str]:
    raw = getattr(dataset, "classes", None)
    if raw is None:
        raw = getattr(dataset, "categories", None)  # Caltech101/256
    if raw is None:
        raise ValueError(f"{name}: {type(dataset).__name__} exposes neither .classes nor .categories")
    raw = [str(c) for c in raw]
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
    * tinyimagenet: its wnid folders (from ``dataset`` or ``<root>/tinyimagenet/val``) mapped to open_clip's
      ImageNet names via the wnid list found in ``<root>/imagenet/`` (torchvision ``meta.bin``, the devkit
      archive, or a ``val/`` with 1000 wnid folders); without one, the wnids themselves (with a warning).
    * pcam: TeCoA's two class phrases; flowers102: torchvision's ``Flowers102.classes``.
    * others: the dataset's ``classes``/``categories`` refined like TeCoA (lower-case, ``_``/``-`` to spaces),
      plus: Caltech256 drops the ``NNN.`` prefix and ``-101`` suffix, SUN397 turns ``/`` into a space, EuroSAT
      splits CamelCase, Caltech101's face folders become "off-center face"/"centered face".

    Without ``dataset``, names that depend on files on disk are read from ``root`` (the data root), loading
    the dataset if needed; ValueError if neither is given for such a dataset.
    """
    spec = _spec(name)
    data_root = None if root is None else Path(root).expanduser()
    if name == "pcam":
        return list(_PCAM_CLASSNAMES)
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
            if data_root is None:  # ImageFolder root is <root>/tinyimagenet/<split>
                data_root = Path(dataset.root).parent.parent
        elif data_root is not None:
            folder = data_root / "tinyimagenet" / spec.split
            if not folder.is_dir():
                raise _missing_error(spec, [folder])
            wnids = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
        else:
            raise ValueError("tinyimagenet class names depend on its folders: pass dataset= or root=")
        return _wnids_to_names(wnids, data_root / "imagenet", what="tinyimagenet")
    if dataset is None:
        if data_root is None:
            raise ValueError(f"{name} class names are read from the dataset files: pass dataset= or root=")
        return load_paper_dataset(name, root=data_root)[1]
    return _classnames_from_dataset(name, dataset)
