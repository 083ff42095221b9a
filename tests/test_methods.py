"""One record per method (nbhelpers.methods): the records are consistent with the configs, and a method registered
inside a test trains and is evaluated through the ordinary path (config validation, engine, builder, evaluation)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from test_method_keys import ONE_STEP, model_ids, undeclared_reads

from nbhelpers import attacks, config, evaluation, methods, paths, study, study_runs, suite, training, world
from nbhelpers.config import (ConfigError, EvaluationConfig, FinetuneConfig, FinetuneKnobs, IATKnobs, StudyConfig,
                              TAIKnobs, knob)

CONFIG_FIELDS = set(FinetuneConfig.field_names()) | set(IATKnobs.field_names())


@pytest.mark.parametrize("method", methods.all_methods(), ids=lambda m: m.name)
def test_each_record_names_real_knobs_and_a_registered_engine(method):
    assert set(method.knobs) <= CONFIG_FIELDS, f"{method.name}: knobs that no config declares"
    assert set(method.key_fields) <= set(FinetuneConfig.field_names()), f"{method.name}: reads no config declares"
    assert not method.engine or method.engine in methods.engine_names()
    for source, keys in method.selection:
        assert source in (*study.study_methods(), *methods.STUDY_PENDING) and (keys is None or set(keys) <= CONFIG_FIELDS)
    if method.search is not None:  # its grid moves only its own knobs (plus the shared learning rate)
        defaults = {**TAIKnobs.defaults(), **IATKnobs.defaults(), **FinetuneKnobs.defaults()}
        for point in method.search(defaults, 200):
            assert set(point) <= set(method.knobs), f"{method.name}'s grid moves {set(point) - set(method.knobs)}"


def test_config_choices_are_the_registry():
    assert FinetuneConfig.from_params(method="fare").method == "fare"
    with pytest.raises(ConfigError, match="tima"):  # a composite is not an engine method
        FinetuneConfig.from_params(method="tima")
    assert EvaluationConfig.from_params(models=methods.model_names()).models == tuple(methods.model_names())
    with pytest.raises(ConfigError, match="unknown model"):
        EvaluationConfig.from_params(models=["tecoa", "toy"])
    assert set(study.study_methods()) == {"tecoa", "pmg_aft", "pmg_aft_code", "laat", "fare", "tai", "tima"}


def test_a_pending_method_joins_the_study_only_when_asked(monkeypatch):
    """A studied method without committed runs (as pmg_aft_code was before its runs landed) stays out of the study
    unless TIMA_STUDY_PENDING=1."""
    assert methods.STUDY_PENDING == ()  # every studied method's runs are in the committed store
    monkeypatch.setattr(methods, "STUDY_PENDING", ("pmg_aft_code",))
    assert "pmg_aft_code" not in study.study_methods()
    monkeypatch.setenv(methods.STUDY_PENDING_ENV, "1")
    assert study.study_methods() == ("tecoa", "pmg_aft", "pmg_aft_code", "laat", "fare", "tai", "tima")
    monkeypatch.setenv(methods.STUDY_PENDING_ENV, "true")
    with pytest.raises(ValueError, match="must be '0' or '1'"):
        study.study_methods()
    assert set(study.baselines()) == {"tecoa", "pmg_aft", "laat", "fare"}


def test_registry_refuses_duplicates_and_missing_engines():
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.get("tecoa"))
    with pytest.raises(ValueError, match="engine 'nope' is not registered"):
        methods.register(methods.Method("composite", "C", "d", engine="nope"))
    with pytest.raises(ValueError, match="needs an objective"):
        methods.Method("bare", "B", "d", engine="bare")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.get("nope")


def test_selected_overrides_follow_the_records_selection():
    selected = {"tecoa": {"finetune_lr": 3e-4, "warmup_steps": 0}, "tima": {"finetune_lr": 1e-4, "sc_weight": 25.0}}
    assert methods.selected_overrides("iat_tecoa", selected) == {"finetune_lr": 3e-4, "warmup_steps": 0,
                                                                 "sc_weight": 25.0}
    assert methods.selected_overrides("tima", selected) == selected["tima"]
    assert methods.selected_overrides("zero_shot", selected) == {}
    with pytest.raises(KeyError, match="pmg_aft"):
        methods.selected_overrides("pmg_aft", selected)


@dataclasses.dataclass(frozen=True)
class ToyFinetuneConfig(FinetuneConfig):
    """FinetuneConfig with one more knob, as a contributor adds one to nbhelpers/config.py (README "Adding a method")."""

    toy_clean_weight: float = knob(0.5, "toy: weight of the clean cross-entropy (the rest: the adversarial one)")


def test_a_toy_method_with_its_own_knob_and_attack_trains_and_is_evaluated_through_the_ordinary_path(
        mini_model, tmp_path, monkeypatch):
    """The README's "Adding a method", done inside a test: a new knob (a config field), an objective that reads it,
    a training attack of its own (one FGSM-like step), one register call. Config validation accepts it, the engine
    trains it with its objective and attack, the builder pairs it with its text, evaluate scores it, its knob is in
    its key only: no other method's key and no 05 model's ids move, and its one step reads only what it declares."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    five = EvaluationConfig().models
    stand_in = str(paths.MINI_CHECKPOINT)  # any file stands in for the IAT projection: it enters ids by content
    keys_before = {m: training.cache_key(FinetuneConfig(method=m)) for m in methods.engine_names()}
    ids_before = {m: model_ids(EvaluationConfig(), m, iat_path=stand_in) for m in five}
    calls = {"objective": 0, "attack": 0}

    def toy_objective(ctx: methods.StepContext) -> torch.Tensor:
        calls["objective"] += ctx.adv is not None
        w = ctx.cfg.toy_clean_weight
        return (1 - w) * F.cross_entropy(ctx.logits(ctx.adv), ctx.labels) + w * F.cross_entropy(
            ctx.logits(ctx.images), ctx.labels)

    def toy_attack(ctx: methods.AttackContext) -> torch.Tensor:
        calls["attack"] += 1
        return attacks.pgd_attack(ctx.head, ctx.images, ctx.labels, **{**ctx.budget, "steps": 1})

    monkeypatch.setattr(config, "FinetuneConfig", ToyFinetuneConfig)  # the knob, as if declared in config.py
    toy = methods.Method("toy", "Toy (half TeCoA)", "test method", engine="toy", objective=toy_objective,
                         training_attack=methods.TrainingAttack("toy_fgsm", toy_attack), reads=("toy_clean_weight",))
    with methods.registered(toy):
        cfg = EvaluationConfig.from_params(models=["zero_shot", "toy"], finetune_steps=2, train_batch_size=16,
                                           warmup_steps=1, configs="knobs")
        model = suite.build_eval_model("toy", cfg, mini_model, progress=False)
        assert calls == {"objective": 2, "attack": 2}  # its attack and its objective ran at each step
        assert model.run.config.method == "toy" and model.label == "Toy (half TeCoA)"
        assert model.image_id.startswith("finetune-") and model.text_id.startswith("text-")
        changed = [not torch.equal(a, b) for a, b in zip(model.image_model.visual.parameters(),
                                                          mini_model.visual.parameters())]
        assert any(changed)
        zero = suite.build_eval_model("zero_shot", cfg, mini_model)
        rows = evaluation.evaluate({"zero_shot": zero, "toy": model}, profile="mini", datasets=["shapes"],
                                   attacks=["pgd10"], eps_list=[4.0], n=16, batch_size=16)
        assert set(rows.model) == {"zero_shot", "toy"} and rows.accuracy.between(0, 1).all()
        again = suite.build_eval_model("toy", cfg, mini_model, progress=False)  # from the cache: same weights
        assert again.image_id == model.image_id and calls["objective"] == 2
        # its knob is in its key, and nowhere else
        other = suite.finetune_config_for("toy", cfg, toy_clean_weight=0.9)
        assert "finetune-" + training.cache_key(other) != model.image_id
        assert {m: training.cache_key(ToyFinetuneConfig(method=m)) for m in keys_before} == keys_before
        assert {m: model_ids(EvaluationConfig(), m, iat_path=stand_in) for m in five} == ids_before
        assert undeclared_reads(ToyFinetuneConfig.from_params(method="toy", **ONE_STEP), tmp_path) == set()
    with pytest.raises(ConfigError):  # gone after the block
        EvaluationConfig.from_params(models=["toy"])


def test_a_selection_06_cannot_fill_is_refused_at_registration():
    """A method that takes its configuration from 06's selection of a method 06 does not search would fail later
    with a KeyError in 04/05: refused when registered, naming the ways out."""
    with pytest.raises(ValueError, match="which 06 does not search"):
        methods.register(methods.Method("toy", "T", "d", engine="toy", objective=methods.clean_ce,
                                        selection=(("toy", None),)))
    with pytest.raises(ValueError, match="which 06 does not search"):
        methods.register(methods.Method("toy", "T", "d", engine="tecoa", selection=(("ft_standard", None),)))
    assert "toy" not in methods.model_names()
    with pytest.raises(KeyError, match='configs="knobs"'):
        methods.selected_overrides("tecoa", {"pmg_aft": {}})


def test_the_builder_pairs_each_method_with_its_text(mini_model, tmp_path, monkeypatch):
    """LAAT-style is scored against expanded anchors, TeCoA against the original text; identities differ."""
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    cfg = EvaluationConfig.from_params(finetune_steps=1, train_batch_size=8, warmup_steps=1, configs="knobs")
    built = {m: suite.build_eval_model(m, cfg, mini_model, progress=False) for m in ("tecoa", "laat")}
    names, templates = world.TASKS["shapes"].classnames(), [world.PROMPT_TEMPLATE]
    assert built["laat"].text_side == "laat_expanded" and built["tecoa"].text_side == "original"
    assert not torch.allclose(built["laat"].embed(names, templates), built["tecoa"].embed(names, templates))
    assert built["laat"].text_id != built["tecoa"].text_id and built["laat"].image_id != built["tecoa"].image_id
    twin = suite.build_eval_model("laat", dataclasses.replace(cfg, laat_spread=2.0), mini_model, progress=False)
    assert twin.text_id != built["laat"].text_id  # another expansion is another text side


def test_training_cli_defaults_to_the_selection_or_refuses(tmp_path, monkeypatch, capsys):
    """Without --finetune_lr the CLI trains 06's selected configuration; a method 06 did not select is refused."""
    selection = tmp_path / "06_selected.json"
    selection.write_text('{"profile": "mini", "selected": {"tecoa": {"finetune_lr": 0.0003, "warmup_steps": 0}, '
                         '"tima": {"finetune_lr": 0.0001, "sc_weight": 1.0}}}')
    assert training.selected_defaults("tecoa", path=selection) == {"finetune_lr": 3e-4, "warmup_steps": 0}
    assert training.selected_defaults("tai", text_source="iat", path=selection) == {"finetune_lr": 1e-4}
    assert training.selected_defaults("tai", path=selection) is None  # TAI itself was not selected in this file
    assert training.selected_defaults("tecoa", profile="paper", path=selection) is None
    monkeypatch.setattr(paths, "STUDY_SELECTION", selection)
    seen = {}
    monkeypatch.setattr(training, "finetune", lambda cfg, **kw: seen.setdefault("cfg", cfg) and
                        training.FinetuneResult(None, None, None, cfg, 0.0))
    assert training.main(["--method", "tecoa", "--warmup_steps", "5"]) == 0
    assert (seen["cfg"].finetune_lr, seen["cfg"].warmup_steps) == (3e-4, 5)  # explicit flags win
    for argv in (["--method", "ft_standard"], ["--method", "tecoa", "--profile", "paper"]):
        with pytest.raises(SystemExit):
            training.main(argv)
        assert "--finetune_lr" in capsys.readouterr().err
    seen.clear()
    assert training.main(["--method", "ft_standard", "--finetune_lr", "0.01"]) == 0
    assert seen["cfg"].finetune_lr == 0.01


def test_the_committed_selection_file_is_the_stores_selection():
    """results/06_selected.json (the training CLI's defaults) equals the selection the committed study store gives."""
    saved = json.loads(paths.STUDY_SELECTION.read_text())
    assert saved["selected"] == study_runs.selected_configurations(StudyConfig())
    assert saved["numerics"] == study_runs.numerics_fingerprint()
