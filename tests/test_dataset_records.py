"""One record per paper dataset (issue 31, item 3): a 21st dataset is one PaperDatasetSpec plus one fixture writer.

The record holds everything the package knows of a dataset (splits, official sizes, required files, how it is read,
whether torchvision can fetch it, RGB conversion, fixed class names, class folders the doctor counts); this test adds
one inside a test and reads it through the ordinary paths (file check, data doctor, loader, evaluation set).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from paper_fixtures import Fixture, class_value, label_of, write_flat
from torchvision import transforms

from nbhelpers import data, paper_data
from nbhelpers.paper_data import OfficialSize, PaperDatasetSpec

CLASSES = ["Dry_Lake", "Golf-Course", "Sea_Ice"]  # class folders as a release names them


def _toyfolders_files(root: Path, split: str) -> list[Path]:
    return [root / "toyfolders" / split]


def _toyfolders_reader(root: Path, split: str, kw: dict, skip: bool) -> object:
    import torchvision.datasets as tvd

    return tvd.ImageFolder(root / "toyfolders" / split, **kw)


TOY = PaperDatasetSpec(
    "toyfolders", "ImageFolder", "test", True, "toyfolders",
    "Extract toyfolders.zip so that <root>/toyfolders/test/<Class>/*.png exists. torchvision cannot download it.",
    "https://example.org/toyfolders.zip", role="validation",
    splits=("test",), sizes=(("test", OfficialSize(3, 6, "the toy release: 2 images per class")),),
    required=_toyfolders_files, construct=_toyfolders_reader, downloadable=False, needs_rgb=True,
    class_folders=(("test", ("toyfolders", "test")),))


def write_toyfolders_fixture(root: Path) -> Fixture:
    """toyfolders/test/<Class>/<n>.png, grayscale (so the record's RGB conversion is needed)."""
    labels = []
    for label, folder in enumerate(CLASSES):
        for i in range(2):
            write_flat(root / "toyfolders" / "test" / folder / f"{i}.png", class_value(label, i), mode="L")
            labels.append(label)
    return Fixture("toyfolders", ["dry lake", "golf course", "sea ice"], len(labels), labels)


def test_a_new_dataset_is_one_record_and_one_fixture(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown paper dataset 'toyfolders'"):
        paper_data.check_dataset_files("toyfolders", root=tmp_path)
    with paper_data.registered_dataset(TOY):
        assert "toyfolders" in paper_data.list_validation_datasets()
        with pytest.raises(FileNotFoundError, match="example.org/toyfolders.zip"):
            paper_data.check_dataset_files("toyfolders", root=tmp_path)
        assert [s.status for s in paper_data.diagnose_data_root(tmp_path, datasets=["toyfolders"])] == ["missing"]
        fixture = write_toyfolders_fixture(tmp_path)
        paper_data.check_dataset_files("toyfolders", root=tmp_path)
        (status,) = paper_data.diagnose_data_root(tmp_path, datasets=["toyfolders"])
        assert status.status == "found", status.problems  # the doctor counted 3 classes, 6 images: complete
        dataset, classnames = paper_data.load_paper_dataset("toyfolders", root=tmp_path,
                                                            transform=transforms.ToTensor(), allow_partial=False)
        assert classnames == fixture.classnames and len(dataset) == fixture.size
        assert all(image.shape[0] == 3 and label_of(image) == label for image, label in dataset)
        with pytest.raises(ValueError, match="unknown split 'train'"):
            paper_data.load_paper_dataset("toyfolders", root=tmp_path, split="train")
        small = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])
        ev = data.load_eval_set("paper", "toyfolders", n=4, data_root=tmp_path, preprocess=small)
        assert len(ev) == 4 and ev.classnames == fixture.classnames and ev.sampling == "random"
    assert "toyfolders" not in paper_data.PAPER_DATASETS and ("toyfolders", "test") not in paper_data.OFFICIAL_SIZES


def test_a_record_is_checked_when_made() -> None:
    with pytest.raises(ValueError, match="must start with its split"):
        PaperDatasetSpec("x", "ImageFolder", "test", True, "x", "h", "s", splits=("train", "test"),
                         required=_toyfolders_files)
    with pytest.raises(ValueError, match="needs required="):
        PaperDatasetSpec("x", "ImageFolder", "test", True, "x", "h", "s")
    with pytest.raises(ValueError, match="already registered"):
        paper_data.register_dataset(paper_data.PAPER_DATASETS["fer2013"])
