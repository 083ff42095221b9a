"""The embedded mini world: a seeded, procedural image-caption generator with semantic structure.

Every image is one object drawn on a background and described by five attributes: size, colour, pattern,
shape and background. Attribute values are chosen so that some classes are semantically close in both
modalities: they share caption words *and* look alike ("red" / "dark red", "circle" / "hollow circle",
"striped" / "vertically striped", "dotted" / "speckled"), while others are far ("yellow" / "dark blue").
That gives the analyses of the paper (margin vs semantic similarity) something real to measure.

Images are float tensors in [0, 1] of shape (N, 3, S, S); everything is generated from integer seeds with a
private ``torch.Generator``, so a dataset is identical on every CPU run.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1

SIZES: tuple[str, ...] = ("small", "large")
COLOURS: tuple[str, ...] = (
    "red", "dark red", "orange", "yellow", "green", "dark green", "blue", "light blue", "purple", "pink",
)
PATTERNS: tuple[str, ...] = ("plain", "striped", "vertically striped", "dotted", "checked", "speckled")
SHAPES: tuple[str, ...] = (
    "circle", "hollow circle", "square", "hollow square", "diamond", "triangle", "cross", "bar",
)
BACKGROUNDS: tuple[str, ...] = ("white", "gray", "black")

_RGB = torch.tensor([
    [0.85, 0.10, 0.10], [0.50, 0.04, 0.04], [0.95, 0.55, 0.10], [0.95, 0.90, 0.15],
    [0.15, 0.75, 0.20], [0.05, 0.40, 0.10], [0.15, 0.30, 0.90], [0.50, 0.75, 0.98],
    [0.55, 0.15, 0.75], [0.98, 0.55, 0.75],
])
_CAST = 0.2  # per-image illumination: every channel of the whole image scaled by U(1 - _CAST, 1 + _CAST)
_BG = torch.tensor([0.92, 0.55, 0.10])
_RADIUS_FRAC = torch.tensor([0.25, 0.38])  # object radius as a fraction of the image side

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "size": SIZES, "colour": COLOURS, "pattern": PATTERNS, "shape": SHAPES, "background": BACKGROUNDS,
}
# probability that a caption mentions each attribute (the shape falls back to the word "object")
CAPTION_KEEP: dict[str, float] = {"size": 0.4, "colour": 0.75, "pattern": 0.6, "shape": 0.75, "background": 0.3}
CAPTION_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}.")
PROMPT_TEMPLATE = "a photo of a {}."
TEST_POOL = 4096  # images per task in the test split; first-N evaluation takes a prefix
TRAIN_POOL = 16384  # images per task in the train split (fine-tuning)
VAL_POOL = 2048  # images per task in the val split (selection only, never reported)


@dataclass(frozen=True)
class WorldTask:
    """A labelled task of the mini world: which attributes form the label, and how a class is named."""

    name: str
    label_attributes: tuple[str, ...]
    zero_shot: bool
    description: str

    def class_attributes(self) -> list[dict[str, int]]:
        """All classes as attribute-index dicts, in label order."""
        combos: list[dict[str, int]] = [{}]
        for attr in self.label_attributes:
            combos = [{**c, attr: i} for c in combos for i in range(len(ATTRIBUTES[attr]))]
        return combos

    def classnames(self) -> list[str]:
        """Class names in the captions' word order (colour, pattern, shape), 'object' if no shape."""
        return [describe(c) for c in self.class_attributes()]


TASKS: dict[str, WorldTask] = {
    t.name: t
    for t in (
        WorldTask("shapes", ("shape",), True, "8 shapes; circle/hollow circle and square/hollow square are close"),
        WorldTask("colours", ("colour",), True, "10 colours; red/dark red/pink, green/dark green, blue/light blue close"),
        WorldTask("patterns", ("pattern",), True, "6 textures; striped/vertically striped, dotted/speckled close"),
        WorldTask("objects", ("colour", "shape"), True, "80 colour-shape pairs: the many-class set of finding 2"),
        WorldTask("colour_patterns", ("colour", "pattern"), True, "60 colour-pattern pairs"),
        WorldTask("pattern_shapes", ("pattern", "shape"), False,
                  "48 pattern-shape pairs: the fine-tuning set (stands in for TinyImageNet)"),
    )
}
ZERO_SHOT_TASKS: tuple[str, ...] = tuple(n for n, t in TASKS.items() if t.zero_shot)
FINETUNE_TASK = "pattern_shapes"
# Validation tasks: used only to select hyper-parameters (notebook 06), never reported as zero-shot results. Each
# crosses one attribute the test tasks label (shape, colour, pattern) with one they never label (size,
# background), so no label space equals a test or the fine-tuning task's; they live outside TASKS (which lists
# the reported tasks and the fine-tuning task) and render only in their own "val" split.
VALIDATION_TASKS: dict[str, WorldTask] = {
    t.name: t
    for t in (
        WorldTask("size_shapes", ("size", "shape"), False, "16 size-shape pairs: validation only (selection)"),
        WorldTask("size_colours", ("size", "colour"), False, "20 size-colour pairs: validation only (selection)"),
        WorldTask("background_patterns", ("pattern", "background"), False,
                  "18 pattern-background pairs: validation only (selection)"),
    )
}
SPLITS: dict[str, int] = {"test": TEST_POOL, "train": TRAIN_POOL, "val": VAL_POOL}  # split -> pool size (images)


def task_spec(task: str) -> WorldTask:
    """The WorldTask of a test, fine-tuning or validation task name."""
    spec = TASKS.get(task) or VALIDATION_TASKS.get(task)
    if spec is None:
        raise ValueError(f"unknown mini-world task {task!r}; choose one of {sorted(TASKS)} "
                         f"or a validation task {sorted(VALIDATION_TASKS)}")
    return spec


def task_role(task: str) -> str:
    """'test' (a reported zero-shot task), 'finetune' (the fine-tuning task) or 'validation' (selection only)."""
    spec = task_spec(task)
    if task in VALIDATION_TASKS:
        return "validation"
    return "test" if spec.zero_shot else "finetune"


def task_splits(task: str) -> tuple[str, ...]:
    """Splits a task renders: test tasks test/train; the fine-tuning task also val (held out); validation tasks val."""
    return {"test": ("test", "train"), "finetune": ("test", "train", "val"), "validation": ("val",)}[task_role(task)]


def describe(attrs: dict[str, int]) -> str:
    """Noun phrase for an attribute dict, e.g. {'colour': 0, 'shape': 1} -> 'red hollow circle'."""
    words = [ATTRIBUTES[a][attrs[a]] for a in ("size", "colour", "pattern") if a in attrs]
    words.append(SHAPES[attrs["shape"]] if "shape" in attrs else "object")
    phrase = " ".join(words)
    if "background" in attrs:
        phrase += f" on a {BACKGROUNDS[attrs['background']]} background"
    return phrase


def derive_seed(*parts: object) -> int:
    """Stable 63-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_attributes(n: int, *, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Uniformly random attribute indices: dict of int64 tensors of shape (n,)."""
    return {a: torch.randint(len(v), (n,), generator=generator) for a, v in ATTRIBUTES.items()}


def _shape_masks(shape: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Boolean masks (N, S, S) of each sample's shape on normalised coordinates u, v (N, S, S)."""
    r2 = u * u + v * v
    linf = torch.maximum(u.abs(), v.abs())
    masks = torch.stack([
        r2 <= 1.0,
        (r2 <= 1.0) & (r2 >= 0.55 ** 2),
        linf <= 0.82,
        (linf <= 0.82) & (linf >= 0.45),
        u.abs() + v.abs() <= 1.05,
        (v <= 0.75) & (v >= -0.95) & (u.abs() <= 0.95 * (v + 0.95) / 1.7),
        ((u.abs() <= 0.3) & (v.abs() <= 0.95)) | ((v.abs() <= 0.3) & (u.abs() <= 0.95)),
        (v.abs() <= 0.32) & (u.abs() <= 1.0),
    ], dim=1)  # (N, n_shapes, S, S)
    return masks.gather(1, shape.view(-1, 1, 1, 1).expand(-1, 1, *u.shape[1:])).squeeze(1)


def _pattern_factor(pattern: torch.Tensor, size: int, *, generator: torch.Generator) -> torch.Tensor:
    """Brightness factor (N, S, S) of each sample's texture; 1 where the object keeps its colour."""
    n = pattern.shape[0]
    ys = torch.arange(size).view(1, size, 1)
    xs = torch.arange(size).view(1, 1, size)
    phase = torch.randint(4, (n, 2, 1, 1), generator=generator)
    y, x = ys + phase[:, 0], xs + phase[:, 1]
    dark = 0.45
    stripes_h = ((y // 2) % 2 == 0).expand(n, size, size)
    stripes_v = ((x // 2) % 2 == 0).expand(n, size, size)
    dots = ((y % 4) < 2) & ((x % 4) < 2)
    checks = ((y // 3 + x // 3) % 2 == 0)
    speckle = torch.rand(n, size, size, generator=generator) < 0.35
    ones = torch.ones(n, size, size, dtype=torch.bool)
    patterns = torch.stack([~ones, stripes_h, stripes_v, dots.expand(n, -1, -1), checks.expand(n, -1, -1),
                            speckle], dim=1)
    chosen = patterns.gather(1, pattern.view(-1, 1, 1, 1).expand(-1, 1, size, size)).squeeze(1)
    return torch.where(chosen, torch.tensor(dark), torch.tensor(1.0))


def render_images(attrs: dict[str, torch.Tensor], *, image_size: int = 32,
                  generator: torch.Generator) -> torch.Tensor:
    """Draw one object per sample: float32 images (N, 3, S, S) in [0, 1] from attribute indices (N,)."""
    n, s = attrs["shape"].shape[0], image_size
    radius = _RADIUS_FRAC[attrs["size"]] * s * (1 + 0.08 * (2 * torch.rand(n, generator=generator) - 1))
    margin = radius + 1
    centre = margin.unsqueeze(1) + torch.rand(n, 2, generator=generator) * (s - 2 * margin).unsqueeze(1)
    grid = torch.arange(s, dtype=torch.float32) + 0.5
    v = (grid.view(1, s, 1) - centre[:, 1].view(n, 1, 1)) / radius.view(n, 1, 1)
    u = (grid.view(1, 1, s) - centre[:, 0].view(n, 1, 1)) / radius.view(n, 1, 1)
    u, v = u.expand(n, s, s), v.expand(n, s, s)
    mask = _shape_masks(attrs["shape"], u, v)
    colour = (_RGB[attrs["colour"]] + 0.08 * torch.randn(n, 3, generator=generator)).clamp(0, 1)
    bg = (_BG[attrs["background"]].unsqueeze(1) + 0.05 * torch.randn(n, 3, generator=generator)).clamp(0, 1)
    factor = _pattern_factor(attrs["pattern"], s, generator=generator)
    obj = colour.view(n, 3, 1, 1) * factor.unsqueeze(1)
    img = torch.where(mask.unsqueeze(1), obj, bg.view(n, 3, 1, 1))
    cast = 1 + _CAST * (2 * torch.rand(n, 3, 1, 1, generator=generator) - 1)
    img = img * cast + 0.03 * torch.randn(n, 3, s, s, generator=generator)
    return img.clamp(0, 1)


def make_captions(attrs: dict[str, torch.Tensor], *, generator: torch.Generator) -> list[str]:
    """One caption per sample naming a random subset of its attributes (at least one)."""
    n = attrs["shape"].shape[0]
    keep = {a: torch.rand(n, generator=generator) < p for a, p in CAPTION_KEEP.items()}
    template = torch.randint(len(CAPTION_TEMPLATES), (n,), generator=generator)
    fallback = torch.randint(2, (n,), generator=generator)  # shape or colour when nothing was kept
    captions = []
    for i in range(n):
        kept = {a: int(attrs[a][i]) for a in ATTRIBUTES if keep[a][i]}
        if not ({"size", "colour", "pattern", "shape"} & kept.keys()):
            attr = ("shape", "colour")[int(fallback[i])]
            kept[attr] = int(attrs[attr][i])
        captions.append(CAPTION_TEMPLATES[int(template[i])].format(describe(kept)))
    return captions


def generate_pairs(n: int, *, seed: int, image_size: int = 32) -> tuple[torch.Tensor, list[str]]:
    """n random image-caption pairs for contrastive pretraining: images (n, 3, S, S) in [0, 1], captions."""
    g = torch.Generator().manual_seed(seed)
    attrs = sample_attributes(n, generator=g)
    return render_images(attrs, image_size=image_size, generator=g), make_captions(attrs, generator=g)


def generate_task(task: str, n: int | None = None, *, seed: int = 0, split: str = "test",
                  image_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """First n labelled images of a task's fixed split: images (n, 3, S, S) in [0, 1], labels (n,) int64.

    A split is a fixed pool (TEST_POOL, TRAIN_POOL or VAL_POOL images, classes balanced and shuffled), rendered in
    chunks with their own seeds, so a small n is always a prefix of a larger one (first-N evaluation). Validation
    tasks (VALIDATION_TASKS) render only split="val", seeded by derive_seed(seed, task, "val", ...).
    """
    spec = task_spec(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(SPLITS)}")
    if split not in task_splits(task):
        raise ValueError(f"task {task!r} ({task_role(task)}) has no {split!r} split; it renders "
                         f"{list(task_splits(task))} (validation tasks render only 'val', never a reported split)")
    pool = SPLITS[split]
    n = pool if n is None else n
    if not 0 < n <= pool:
        raise ValueError(f"n must be in [1, {pool}] for the {split} split, got {n}")
    classes = spec.class_attributes()
    g = torch.Generator().manual_seed(derive_seed(seed, task, split, "labels"))
    labels = (torch.arange(pool) % len(classes))[torch.randperm(pool, generator=g)]
    images = []
    for start in range(0, n, _CHUNK):  # whole chunks, so the random streams do not depend on n
        gc = torch.Generator().manual_seed(derive_seed(seed, task, split, "chunk", start))
        y = labels[start:start + _CHUNK]
        attrs = sample_attributes(len(y), generator=gc)
        for attr in spec.label_attributes:
            attrs[attr] = torch.tensor([classes[int(k)][attr] for k in y], dtype=torch.int64)
        images.append(render_images(attrs, image_size=image_size, generator=gc))
    return torch.cat(images)[:n], labels[:n]


_CHUNK = 256
