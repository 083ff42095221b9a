"""The data doctor (issue 19, item 3): ``python -m nbhelpers.paper_data ROOT`` and ``diagnose_data_root(root)`` list
every paper dataset as found, missing or incomplete, with the files expected, the folder and where to get it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbhelpers.paper_data import (
    DATA_STATUSES,
    PAPER_DATASETS,
    diagnose_data_root,
    format_data_report,
    list_paper_datasets,
    list_validation_datasets,
    main,
)
from paper_fixtures import write_fixture

ROOT = Path(__file__).resolve().parent.parent
PRESENT = ["cifar10", "stl10", "sun397", "eurosat", "dtd"]
COUNTED = ["eurosat"]  # written in full layout, but a class-folder layout the doctor counts: 4 of 10 classes


@pytest.fixture
def mixed_root(tmp_path: Path) -> Path:
    """Five datasets in their downloaded layouts, Flowers102 without setid.mat, the other ten reported datasets and
    06's four validation datasets absent."""
    for name in PRESENT + ["flowers102"]:
        write_fixture(name, tmp_path)
    (tmp_path / "flowers-102" / "setid.mat").unlink()
    return tmp_path


def _listing(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*"))


def test_diagnose_reports_found_missing_and_incomplete(mixed_root: Path) -> None:
    before = _listing(mixed_root)
    start = time.perf_counter()
    statuses = diagnose_data_root(mixed_root)
    assert time.perf_counter() - start < 2.0
    assert _listing(mixed_root) == before  # reads, never writes

    assert [s.dataset for s in statuses] == list(PAPER_DATASETS) == list_paper_datasets() + list_validation_datasets()
    by_name = {s.dataset: s for s in statuses}
    expected = {name: "found" if name in PRESENT and name not in COUNTED
                else "incomplete" if name in ("flowers102", *COUNTED) else "missing" for name in PAPER_DATASETS}
    assert {s.dataset: s.status for s in statuses} == expected
    assert all(s.status in DATA_STATUSES for s in statuses)

    flowers = by_name["flowers102"]
    assert flowers.problems == (str(mixed_root / "flowers-102" / "setid.mat"),)
    assert str(mixed_root / "flowers-102" / "jpg") in flowers.expected
    assert flowers.folder == str(mixed_root / "flowers-102")
    for name, status in by_name.items():
        spec = PAPER_DATASETS[name]
        assert status.source == spec.source and status.hint == spec.hint and status.torchvision_class
        assert status.folder == str(mixed_root / spec.subdir) and status.expected
        assert (status.problems == ()) == (status.status == "found")
        if status.status == "missing":
            assert set(status.problems) == set(status.expected)
    assert by_name["pcam"].problems == tuple(str(mixed_root / "pcam" / f"camelyonpatch_level_2_split_test_{xy}.h5")
                                             for xy in ("x", "y"))
    assert by_name["tinyimagenet"].splits == ("val", "train")  # the fine-tuning set's train split is checked too
    assert set(by_name["dtd"].as_row()) >= {"dataset", "status", "role", "folder", "problems", "expected", "source"}
    assert {name for name, s in by_name.items() if s.role == "validation"} == set(list_validation_datasets())
    assert by_name["fer2013"].problems == (str(mixed_root / "fer2013" / "fer2013.csv"),)
    assert by_name["eurosat"].problems[0].startswith("all: 4 of 10 classes, 8 of 27000 images (official: ")


def test_diagnose_finds_tinyimagenet_in_the_official_zip_folder(tmp_path: Path) -> None:
    write_fixture("tinyimagenet", tmp_path)  # <root>/tiny-imagenet-200/ and <root>/imagenet/meta.bin
    tiny, imagenet = diagnose_data_root(tmp_path, datasets=["tinyimagenet", "imagenet"])
    assert tiny.status == "found" and tiny.folder == str(tmp_path / "tiny-imagenet-200")
    assert imagenet.status == "incomplete" and imagenet.problems == (str(tmp_path / "imagenet" / "val"),)


def test_diagnose_an_absent_root_and_unknown_names(tmp_path: Path) -> None:
    assert {s.status for s in diagnose_data_root(tmp_path / "nowhere")} == {"missing"}
    with pytest.raises(ValueError, match="unknown paper dataset 'mnist'"):
        diagnose_data_root(tmp_path, datasets=["cifar10", "mnist"])


def test_report_and_main(mixed_root: Path, capsys: pytest.CaptureFixture) -> None:
    text = format_data_report(diagnose_data_root(mixed_root), root=mixed_root)
    assert "4 found, 14 missing, 2 incomplete" in text
    assert "flowers102 (incomplete): lacks flowers-102/setid.mat" in text
    assert "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/" in text
    assert "get it:  http://cs231n.stanford.edu/tiny-imagenet-200.zip" in text
    lines = text.splitlines()
    assert any(line.split()[:2] == ["cifar10", "found"] for line in lines)
    assert any(line.split()[:2] == ["pcam", "missing"] for line in lines)
    assert any(line.split()[:3] == ["gtsrb", "missing", "gtsrb"] and line.endswith("(validation: 06's paper study only)")
               for line in lines)
    assert not any(line.startswith("cifar10") and "validation" in line for line in lines)

    assert main([str(mixed_root)]) == 1
    assert capsys.readouterr().out.strip() == text
    assert main([str(mixed_root), "--datasets", "cifar10", "dtd"]) == 0
    assert "2 found, 0 missing, 0 incomplete" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(mixed_root), "--datasets", "mnist"])


def test_python_dash_m_runs_the_doctor(mixed_root: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "nbhelpers.paper_data", str(mixed_root)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert ["flowers102", "incomplete", "flowers-102"] in [line.split() for line in proc.stdout.splitlines()]
    assert "4 found, 14 missing, 2 incomplete" in proc.stdout


# ------------------------------------------------------------------ complete or refused (issue 30, item 4)


def test_a_partial_imagenet_is_incomplete_and_refused_unless_allowed(tmp_path: Path, monkeypatch) -> None:
    """ImageNet val with 19 of its 1,000 classes: the doctor says incomplete (counts, source), the loader refuses it
    without the explicit allowance, and with it every evaluation set says "+partial" (a key field of each row)."""
    from nbhelpers import data, paper_data
    from paper_fixtures import FAKE_WNIDS, write_class_folders, write_imagenet_meta

    monkeypatch.delenv(paper_data.ALLOW_PARTIAL_ENV, raising=False)
    write_imagenet_meta(tmp_path / "imagenet")
    write_class_folders(tmp_path / "imagenet" / "val", FAKE_WNIDS[:19], 1)
    status = diagnose_data_root(tmp_path, datasets=["imagenet"])[0]
    assert status.status == "incomplete"
    assert status.problems == ("val: 19 of 1000 classes, 19 of 50000 images (official: "
                               f"{paper_data.OFFICIAL_SIZES['imagenet', 'val'].source})",)
    assert "imagenet (incomplete): lacks val: 19 of 1000 classes" in format_data_report([status])
    with pytest.raises(paper_data.IncompleteDatasetError, match=r"imagenet \(val\): incomplete: .* 19 of 1000 "
                                                                 r"classes, 19 of 50000 images.*allow_partial=True"):
        paper_data.load_paper_dataset("imagenet", root=tmp_path)
    with pytest.raises(paper_data.IncompleteDatasetError):
        data.load_eval_set("paper", "imagenet", n=4, data_root=tmp_path)
    ds, names = paper_data.load_paper_dataset("imagenet", root=tmp_path, allow_partial=True)
    assert len(ds) == 19 and len(names) == 19 and paper_data.is_partial("imagenet", ds, names)
    monkeypatch.setenv(paper_data.ALLOW_PARTIAL_ENV, "1")
    ev = data.load_eval_set("paper", "imagenet", n=4, data_root=tmp_path)
    assert ev.sampling == "random" + paper_data.PARTIAL_MARK
    monkeypatch.setenv(paper_data.ALLOW_PARTIAL_ENV, "yes")
    with pytest.raises(ValueError, match="must be '0' or '1'"):
        paper_data.load_paper_dataset("imagenet", root=tmp_path)


def test_a_split_of_its_official_size_loads_without_the_allowance(tmp_path: Path, monkeypatch) -> None:
    """The check compares with the table, nothing else: the eurosat fixture passes once the table says its size."""
    from nbhelpers import data, paper_data

    monkeypatch.delenv(paper_data.ALLOW_PARTIAL_ENV, raising=False)
    fixture = write_fixture("eurosat", tmp_path)
    with pytest.raises(paper_data.IncompleteDatasetError, match="4 of 10 classes, 8 of 27000 images"):
        paper_data.load_paper_dataset("eurosat", root=tmp_path)
    assert diagnose_data_root(tmp_path, datasets=["eurosat"])[0].status == "incomplete"
    monkeypatch.setitem(paper_data.OFFICIAL_SIZES, ("eurosat", "all"),
                        paper_data.OfficialSize(len(fixture.classnames), fixture.size, "this test"))
    ds, names = paper_data.load_paper_dataset("eurosat", root=tmp_path)
    assert len(ds) == fixture.size and not paper_data.is_partial("eurosat", ds, names)
    assert diagnose_data_root(tmp_path, datasets=["eurosat"])[0].status == "found"
    assert data.load_eval_set("paper", "eurosat", n=3, data_root=tmp_path).sampling == "random"


def test_zero_byte_files_are_incomplete_not_found(tmp_path: Path, monkeypatch) -> None:
    from nbhelpers import paper_data

    write_fixture("cifar10", tmp_path)
    test_batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(b"")
    status = diagnose_data_root(tmp_path, datasets=["cifar10"])[0]
    assert status.status == "incomplete" and status.problems == (f"{test_batch} (empty)",)
    with pytest.raises(FileNotFoundError, match=rf"cifar10: incomplete: .*has empty .*{test_batch}"):
        paper_data.load_paper_dataset("cifar10", root=tmp_path)


def test_every_split_a_tool_reads_has_an_official_size() -> None:
    from nbhelpers import paper_data

    for name, spec in PAPER_DATASETS.items():
        size = paper_data.OFFICIAL_SIZES[name, spec.split]
        assert size.classes >= 2 and size.images >= size.classes and size.source
    assert paper_data.OFFICIAL_SIZES["tinyimagenet", "train"].images == 100_000
