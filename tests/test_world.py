import pytest
import torch

from nbhelpers import world


def test_task_is_deterministic_and_first_n_is_a_prefix():
    x1, y1 = world.generate_task("shapes", 300, seed=3)
    x2, y2 = world.generate_task("shapes", 300, seed=3)
    x3, y3 = world.generate_task("shapes", 40, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1[:40], x3) and torch.equal(y1[:40], y3)
    x4, _ = world.generate_task("shapes", 40, seed=4)
    assert not torch.equal(x3, x4)


def test_images_are_in_unit_range_with_expected_shape_and_balanced_labels():
    x, y = world.generate_task("colours", 800)
    assert x.shape == (800, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    counts = torch.bincount(y, minlength=10)
    assert counts.min() >= 55 and counts.max() <= 105  # balanced pool, prefix roughly balanced


def test_label_attribute_is_rendered():
    # the object's mean colour must follow the colour label: red objects are redder than blue ones
    x, y = world.generate_task("colours", 512, seed=1)
    names = world.TASKS["colours"].classnames()
    red, blue = names.index("red object"), names.index("blue object")
    # pixels far from the background: use the channel difference on the brightest-chroma pixels
    chroma = x[:, 0] - x[:, 2]
    assert chroma[y == red].amax(dim=(1, 2)).mean() > 0.5
    assert chroma[y == blue].amin(dim=(1, 2)).mean() < -0.4


def test_task_classnames_follow_caption_order():
    assert world.TASKS["objects"].classnames()[1] == "red hollow circle"
    assert world.TASKS["colour_patterns"].classnames()[1] == "red striped object"
    assert len(world.TASKS["objects"].classnames()) == 80
    assert not world.TASKS[world.FINETUNE_TASK].zero_shot
    assert world.FINETUNE_TASK not in world.ZERO_SHOT_TASKS


def test_captions_name_the_attributes_of_their_image():
    g = torch.Generator().manual_seed(0)
    attrs = world.sample_attributes(200, generator=g)
    caps = world.make_captions(attrs, generator=g)
    for i, cap in enumerate(caps):
        shape = world.SHAPES[int(attrs["shape"][i])]
        assert shape in cap or "object" in cap
        assert cap.endswith(".")


def test_bad_task_and_sizes_are_rejected():
    with pytest.raises(ValueError, match="unknown mini-world task"):
        world.generate_task("imagenet", 10)
    with pytest.raises(ValueError, match="n must be"):
        world.generate_task("shapes", 0)
    with pytest.raises(ValueError, match="n must be"):
        world.generate_task("shapes", world.TEST_POOL + 1)


@pytest.mark.parametrize(("task", "split", "labels", "total"), [
    ("shapes", "test", [7, 3, 1, 1, 3, 2, 3, 4], 7488.2388),
    ("objects", "test", [18, 42, 52, 36, 77, 71, 13, 35], 15248.0701),
    ("pattern_shapes", "train", [10, 45, 25, 32, 2, 30, 11, 46], 12753.2400),
])
def test_existing_task_rendering_is_pinned(task, split, labels, total):
    # committed results depend on these pixels: adding validation tasks and the val split must not move them
    x, y = world.generate_task(task, 8, seed=0, split=split)
    assert y.tolist() == labels
    assert float(x.double().sum()) == pytest.approx(total, abs=1e-2)


def test_task_lists_keep_their_roles():
    assert world.ZERO_SHOT_TASKS == ("shapes", "colours", "patterns", "objects", "colour_patterns")
    assert not set(world.VALIDATION_TASKS) & set(world.TASKS)
    assert {world.task_role(t) for t in world.ZERO_SHOT_TASKS} == {"test"}
    assert world.task_role(world.FINETUNE_TASK) == "finetune"
    assert {world.task_role(t) for t in world.VALIDATION_TASKS} == {"validation"}
    assert world.task_spec("size_shapes").classnames()[:2] == ["small circle", "small hollow circle"]
    assert world.task_spec("background_patterns").classnames()[0] == "plain object on a white background"


def test_splits_are_refused_where_a_task_has_none():
    with pytest.raises(ValueError, match="no 'val' split"):
        world.generate_task("shapes", 8, split="val")  # a reported task never renders for selection
    with pytest.raises(ValueError, match="no 'test' split"):
        world.generate_task("size_shapes", 8, split="test")  # validation tasks are never test sets
    with pytest.raises(ValueError, match="unknown split"):
        world.generate_task("size_shapes", 8, split="dev")
    with pytest.raises(ValueError, match="n must be"):
        world.generate_task("size_shapes", world.VAL_POOL + 1, split="val")
    x, y = world.generate_task(world.FINETUNE_TASK, 8, split="val")  # held-out fine-tuning images
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)
