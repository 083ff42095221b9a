"""A method owns its keys (issue 31): the training cache key holds the shared recipe and the config fields the
method declares it reads (methods.Method.reads and its TrainingAttack's), nothing of another method.

- one step of every engine method runs with a config that records each field read, and fails on a field the
  method did not declare (a negative control shows an undeclared read is caught);
- a knob moves exactly the 05 models that read it (their image and text ids: what 05's store reuses cells by);
- the committed 05 store's ids are this code's: every trained model's row is reused as it is, none recomputed.
"""
from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch.nn.functional as F

from nbhelpers import attacks, grid, losses, methods, models, paths, prompts, suite, training, zeroshot
from nbhelpers.config import EvaluationConfig, FinetuneConfig
from nbhelpers.models import weights_identity
from nbhelpers.utils import content_key, file_fingerprint, numerics_versions

FIELDS = set(FinetuneConfig.field_names())
ONE_STEP = dict(finetune_steps=1, train_batch_size=8, warmup_steps=1, train_pgd_steps=1, checkpoint_every=1)


class RecordingConfig:
    """A FinetuneConfig whose field reads (attribute access) are recorded in `.read`."""

    def __init__(self, cfg: FinetuneConfig) -> None:
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name: str) -> object:
        if name in FIELDS:
            self.read.add(name)
        return getattr(self._cfg, name)


def undeclared_reads(cfg: FinetuneConfig, tmp_path) -> set[str]:
    """The fields one training step of cfg (training.finetune, from model set-up to checkpoint) reads that its
    method does not declare (neither in the shared recipe nor in its key fields, device knobs, input files)."""
    recording = RecordingConfig(cfg)
    training.finetune(recording, out=tmp_path / f"{cfg.method}-{cfg.adaptation}.pt", progress=False)
    allowed = {*training.key_fields(cfg), *training.SPEED_ONLY, *training.INPUT_FILES}
    assert recording.read & set(training.SHARED_RECIPE), "the recorder saw no read at all"
    return recording.read - allowed


@pytest.mark.parametrize("method, extra", [*((m, {}) for m in methods.engine_names()),
                                            ("tecoa", {"adaptation": "visual_prompt"}),
                                            ("tai", {"margin_kind": "tam_sample"})],
                         ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_one_step_of_every_method_reads_only_declared_fields(method, extra, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    cfg = FinetuneConfig.from_params(method=method, **ONE_STEP, **extra)
    assert undeclared_reads(cfg, tmp_path) == set()


def test_an_undeclared_read_is_caught(tmp_path, monkeypatch):
    """Negative control: an objective reading PMG-AFT's knob without declaring it fails the check."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")

    def sneaky(ctx: methods.StepContext):
        return ctx.cfg.pmg_alpha * F.cross_entropy(ctx.logits(ctx.adv), ctx.labels)

    with methods.registered(methods.Method("sneaky", "S", "reads pmg_alpha undeclared", engine="sneaky",
                                           objective=sneaky)):
        assert undeclared_reads(FinetuneConfig.from_params(method="sneaky", **ONE_STEP), tmp_path) == {"pmg_alpha"}


# ------------------------------------------------------------------------------------------ 05's ids
FIVE = EvaluationConfig().models  # notebook 05's models
# (knob, another valid value) -> the 05 models whose image or text id it moves, written out (not derived)
KNOB_READERS = {
    ("pmg_alpha", 0.5): {"pmg_aft", "pmg_aft_vp"},
    ("pmg_beta", 2.0): {"pmg_aft", "pmg_aft_vp"},
    ("laat_spread", 2.0): {"laat"},
    ("coadv_temperature", 0.2): {"coadv"},
    ("partial_last_n", 3): {"tecoa_partial"},
    ("takd_weight", 2.0): {"tai", "tima", "tima_vp"},
    ("margin_kind", "tam"): {"tai", "tima", "tima_vp"},
    ("offset_every", 5): {"tai", "tima", "tima_vp"},
    ("prompt_lr", 10.0): {"tecoa_vp", "pmg_aft_vp", "tima_vp"},
    ("prompt_tokens", 10): {"tecoa_vp", "pmg_aft_vp", "tima_vp"},
    ("finetune_lr", 3e-4): set(FIVE) - {"zero_shot"},  # the shared recipe: every trained model
}


def model_ids(cfg: EvaluationConfig, name: str, *, iat_path: str = "", offset: float = 0.0) -> tuple[str, str]:
    """(image_id, text_id) that 05 gives model `name` under cfg (the builder's config; nothing trained)."""
    ft = suite.finetune_config_for(name, cfg, margin_offset=offset, iat_path=iat_path)
    image = ("finetune-" + training.cache_key(ft) if ft is not None else
             "base-" + content_key(weights_identity(cfg.profile, model=cfg.model, pretrained=cfg.pretrained,
                                                    checkpoint=cfg.checkpoint)))
    return image, suite.text_identity(cfg, ft)


@pytest.mark.parametrize("knob, value", list(KNOB_READERS), ids=lambda v: str(v))
def test_a_knob_moves_the_ids_of_its_readers_only(knob, value):
    cfg = EvaluationConfig()
    stand_in = str(paths.MINI_CHECKPOINT)  # any file: the IAT projection enters the ids by its content only
    before = {m: model_ids(cfg, m, iat_path=stand_in) for m in FIVE}
    after = {m: model_ids(cfg.replace(**{knob: value}), m, iat_path=stand_in) for m in FIVE}
    assert {m for m in FIVE if after[m] != before[m]} == KNOB_READERS[(knob, value)]


def legacy_cache_key(cfg: FinetuneConfig) -> str:
    """training.cache_key as it was before issue 31 (every config field but the device knobs), for the carry-over;
    attack_start came later (issue 34) and enters a key only off the legacy scheme, so it is left out here."""
    d = {k: v for k, v in cfg.to_dict().items()
         if k not in (*training.SPEED_ONLY, "checkpoint", "iat_projection", "attack_start")}
    d["numerics"] = numerics_versions(training, methods, losses, attacks, zeroshot, models)
    if cfg.amp:
        d["numerics"]["training_amp"] = training.AMP_NUMERICS_VERSION
    if cfg.adaptation == "visual_prompt":
        d["numerics"]["prompts"] = prompts.NUMERICS_VERSION
    d["base_weights"] = weights_identity(cfg.profile, model=cfg.model, pretrained=cfg.pretrained,
                                         checkpoint=cfg.checkpoint)
    d["iat_projection"] = file_fingerprint(cfg.iat_projection) if cfg.iat_projection else ""
    return content_key(d)


def test_keys_of_configs_at_the_knobs_defaults_did_not_move():
    """Every key of a config whose unread knobs sit at their defaults is the key it had before issue 31 (so no
    cache entry nor store row written before was orphaned), for every 05 model, also the IAT ones; a config with
    an unread knob off its default now shares its key (the point), where the old key moved."""
    stand_in = str(paths.MINI_CHECKPOINT)
    for lr in (1e-3, 3e-4):
        cfg = EvaluationConfig(finetune_lr=lr)
        for name in FIVE:
            ft = suite.finetune_config_for(name, cfg, margin_offset=-0.25, iat_path=stand_in)
            if ft is not None:
                assert training.cache_key(ft) == legacy_cache_key(ft), name
    tecoa = FinetuneConfig.from_params(method="tecoa")
    other = tecoa.replace(pmg_alpha=3.0)
    assert training.cache_key(other) == training.cache_key(tecoa) and legacy_cache_key(other) != legacy_cache_key(tecoa)


def test_the_committed_05_store_is_reused_whole():
    """Each row of results/05_evaluation.jsonl of a model 05 can identify here (every model but the two whose IAT
    projection is tuned on the machine) is reused as stored (grid.reuse: 'reuse', nothing recomputed), at 06's
    committed selection and the pre-trained margin offset 04 recorded."""
    rows, _ = grid.load_store(paths.RESULTS_DIR / "05_evaluation.jsonl")
    selected = json.loads(paths.STUDY_SELECTION.read_text())["selected"]
    with open(paths.RESULTS_DIR / "04_margin_offsets.csv") as f:
        offset = float(next(r for r in csv.DictReader(f) if r["model"] == "pre-trained")["offset_cosine"])
    cfg = EvaluationConfig()
    ids = {}
    for name in FIVE:
        if not methods.get(name).needs_iat:
            run_cfg = cfg.replace(**methods.selected_overrides(name, selected))
            ids[name] = model_ids(run_cfg, name, offset=offset if methods.get(name).needs_offset else 0.0)
    checked = [r for r in rows if r["model"] in ids]
    assert len(ids) == 11 and len(checked) == 11 * 33
    for row in checked:
        image_id, text_id = ids[row["model"]]
        cell = {**row, "image_id": image_id, "text_id": text_id}
        assert grid.reuse(row, cell) == "reuse", (row["model"], row["image_id"], image_id)


def test_a_new_knob_moves_no_existing_key():
    """A knob added to FinetuneConfig (here by a subclass, as a contributor adds a field) that no existing method
    reads leaves every existing method's key as it was; a method that declares it is keyed by it."""

    @dataclasses.dataclass(frozen=True)
    class WithNewKnob(FinetuneConfig):
        new_knob: float = 0.5

    for name in methods.engine_names():
        assert training.cache_key(WithNewKnob(method=name)) == training.cache_key(FinetuneConfig(method=name)), name
        assert training.cache_key(WithNewKnob(method=name, new_knob=0.7)) == training.cache_key(
            FinetuneConfig(method=name)), name
