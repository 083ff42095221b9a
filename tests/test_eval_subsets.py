"""Paper-scale evaluation subsets (issue 19, item 4): a fixed, seeded order per dataset whose prefixes are the
subsets, so a smaller run is a prefix of a larger one and the first N of a class-sorted dataset span its classes.
The mini profile's evaluation sets are unchanged (its committed numbers depend on them)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from torchvision import transforms

from nbhelpers import data, world
from nbhelpers.paper_data import (
    DEFAULT_SAMPLING,
    SAMPLING_RULES,
    dataset_labels,
    load_paper_dataset,
    sample_order,
    subset_indices,
)
from paper_fixtures import class_value, label_of, write_flat

SMALL = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])
EUROSAT = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake"]  # EuroSAT's 10 classes: an ImageFolder, sorted by class


def _eurosat(root: Path, per_class: list[int]) -> Path:
    """<root>/eurosat/2750/<Class>/<Class>_<i>.jpg with per_class[k] images of class k (class-sorted on disk)."""
    for k, count in enumerate(per_class):
        for i in range(count):
            write_flat(root / "eurosat" / "2750" / EUROSAT[k] / f"{EUROSAT[k]}_{i + 1}.jpg", class_value(k, i % 10),
                       size=(8, 8))
    return root


@pytest.fixture(scope="module")
def sorted_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A class-sorted dataset like ImageNet's or EuroSAT's folders: 10 classes x 6 images, on disk."""
    root = _eurosat(tmp_path_factory.mktemp("eurosat"), [6] * 10)
    return root, load_paper_dataset("eurosat", root=root)[0]


@pytest.mark.parametrize("rule", SAMPLING_RULES)
def test_a_smaller_subset_is_a_prefix_of_a_larger_one(sorted_set: tuple, rule: str) -> None:
    _, ds = sorted_set
    small = subset_indices("eurosat", ds, n=10, sampling=rule)
    large = subset_indices("eurosat", ds, n=40, sampling=rule)
    assert small == large[:10] and len(large) == 40 and len(set(large)) == 40
    full = sample_order("eurosat", ds, sampling=rule)
    assert sorted(full) == list(range(len(ds)))  # an order of the whole dataset
    assert subset_indices("eurosat", ds, n=10_000, sampling=rule) == full  # n above the size: everything


def test_first_n_of_a_class_sorted_set_covers_many_classes(sorted_set: tuple) -> None:
    """The old rule ("first") gives 2 of 10 classes in the first 10 images; the seeded rules many, balanced all."""
    _, ds = sorted_set
    labels = dataset_labels(ds)

    def classes(rule: str) -> Counter:
        return Counter(labels[i] for i in subset_indices("eurosat", ds, n=10, sampling=rule))

    assert len(classes("first")) == 2
    assert len(classes("random")) >= 5
    assert classes("balanced") == Counter(range(10))  # one image of each class


def test_subsets_are_fixed_per_dataset_and_seed(sorted_set: tuple) -> None:
    _, ds = sorted_set
    for rule in ("random", "balanced"):
        once = subset_indices("eurosat", ds, n=20, sampling=rule, seed=0)
        assert subset_indices("eurosat", ds, n=20, sampling=rule, seed=0) == once  # deterministic
        assert subset_indices("eurosat", ds, n=20, sampling=rule, seed=1) != once  # the seed matters
        assert subset_indices("cifar10", ds, n=20, sampling=rule, seed=0) != once  # so does the dataset
    assert DEFAULT_SAMPLING == "random"
    assert subset_indices("eurosat", ds, n=5) == subset_indices("eurosat", ds, n=5, sampling="random", seed=0)


def test_balanced_order_stays_balanced_on_unequal_classes(tmp_path: Path) -> None:
    """Classes of 1, 3 and 8 images: every prefix's class counts differ by at most one among classes not used up."""
    ds = load_paper_dataset("eurosat", root=_eurosat(tmp_path, [1, 3, 8]))[0]
    labels = dataset_labels(ds)
    sizes = Counter(labels)
    order = sample_order("eurosat", ds, sampling="balanced")
    for n in range(1, len(order) + 1):
        counts = Counter(labels[i] for i in order[:n])
        open_classes = [counts[c] for c in sizes if counts[c] < sizes[c]]
        if open_classes:
            assert max(open_classes) - min(open_classes) <= 1 and min(open_classes) >= max(counts.values()) - 1
    assert [labels[i] for i in order[-5:]] == [2] * 5  # the big class alone at the end


def test_bad_rules_and_sizes_are_refused(sorted_set: tuple) -> None:
    _, ds = sorted_set
    with pytest.raises(ValueError, match="unknown sampling rule 'head'; choose one of random, balanced, first"):
        subset_indices("eurosat", ds, n=4, sampling="head")
    with pytest.raises(ValueError, match="n must be >= 1"):
        subset_indices("eurosat", ds, n=0)


# ------------------------------------------------------------------------------------- through load_eval_set


def test_paper_eval_set_records_its_sampling_and_is_a_prefix(sorted_set: tuple) -> None:
    root, ds = sorted_set
    small = data.load_eval_set("paper", "eurosat", n=10, data_root=root, preprocess=SMALL)
    large = data.load_eval_set("paper", "eurosat", n=40, data_root=root, preprocess=SMALL)
    assert small.sampling == "random+partial" and small.sample_seed == 0  # a small fixture: partial data
    assert small.indices == tuple(subset_indices("eurosat", ds, n=10))
    torch.testing.assert_close(small.images, large.images[:10])
    assert torch.equal(small.labels, large.labels[:10])
    assert small.labels.tolist() == [dataset_labels(ds)[i] for i in small.indices]
    assert [label_of(x) for x in small.images] == small.labels.tolist()  # images and labels stay paired
    assert len(set(small.labels.tolist())) >= 5

    first = data.load_eval_set("paper", "eurosat", n=10, data_root=root, preprocess=SMALL, sampling="first")
    assert first.sampling == "first+partial" and first.indices == tuple(range(10)) and first.sample_seed is None
    assert first.labels.tolist() == [0] * 6 + [1] * 4
    balanced = data.load_eval_set("paper", "eurosat", n=10, data_root=root, preprocess=SMALL, sampling="balanced",
                                  sample_seed=3)
    assert sorted(balanced.labels.tolist()) == list(range(10)) and balanced.sample_seed == 3
    # The run's seed (attacks, training) does not move the images; the sampling seed does.
    again = data.load_eval_set("paper", "eurosat", n=10, seed=5, data_root=root, preprocess=SMALL)
    assert again.indices == small.indices
    other = data.load_eval_set("paper", "eurosat", n=10, data_root=root, preprocess=SMALL, sample_seed=1)
    assert other.indices != small.indices


def test_unknown_sampling_rule_fails_before_reading_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sampling rule 'top'"):
        data.load_eval_set("paper", "eurosat", n=4, data_root=tmp_path / "no-such-root", sampling="top")


def test_mini_eval_sets_are_unchanged() -> None:
    """mini: the first n of the task's seeded pool, exactly as before (its committed results depend on it)."""
    ev = data.load_eval_set("mini", "shapes", n=16, seed=0)
    images, labels = world.generate_task("shapes", 16, seed=0, split="test")
    assert torch.equal(ev.images, images) and torch.equal(ev.labels, labels)
    assert ev.sampling == "first" and ev.indices == () and ev.sample_seed is None
    assert torch.equal(data.load_eval_set("mini", "shapes", n=16, sampling="first").images, images)
    with pytest.raises(ValueError, match="mini profile's tasks are seeded draws"):
        data.load_eval_set("mini", "shapes", n=16, sampling="random")
