"""Visual prompt tuning (issue 21): CLIP frozen, only prompts learn; attacks go through the prompts; TeCoA's prompt
checkpoints load, and ours save in the same layout."""
from __future__ import annotations

import pytest
import torch

from nbhelpers import attacks, models, prompts, training, world
from nbhelpers.config import ConfigError, FinetuneConfig
from nbhelpers.zeroshot import build_class_embeddings, build_head

SMALL = dict(finetune_steps=2, train_batch_size=16, warmup_steps=1, checkpoint_every=100, finetune_lr=1e-3)


@pytest.fixture(scope="module")
def vit():
    return models.create_model_and_transforms("paper", model="ViT-B-32", pretrained="none")[0]


def test_padding_prompt_is_borders_around_a_zero_centre():
    pad = prompts.PadPrompter(224, 30, generator=torch.Generator().manual_seed(0))
    full = pad.prompt()
    assert full.shape == (1, 3, 224, 224)
    assert torch.count_nonzero(full[..., 30:194, 30:194]) == 0 and torch.count_nonzero(full[..., :30, :]) > 0
    x = torch.zeros(2, 3, 224, 224)
    assert torch.equal(pad(x), full.expand(2, -1, -1, -1))  # added, not clamped
    assert prompts.default_pad(224) == 30 and prompts.default_pad(32) == 4
    with pytest.raises(ValueError, match="no centre"):
        prompts.PadPrompter(32, 16, generator=torch.Generator())


def test_token_prompts_join_the_vit_sequence_before_ln_pre(vit):
    import copy

    model = prompts.attach_prompts(copy.deepcopy(vit), tokens=100)
    seen = {}
    model.clip.visual.inner.ln_pre.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(i[0].shape)))
    with torch.no_grad():
        out = model.encode_image(torch.rand(2, 3, 224, 224))
    assert seen["shape"] == (2, 1 + 49 + 100, 768) and out.shape == (2, 512)
    mini = prompts.attach_prompts(models.create_model_and_transforms("mini")[0], tokens=100)
    assert prompts.prompted_visual(mini).token_prompter is None  # the ResNet tower takes the padding prompt only


def test_prompt_training_moves_only_the_prompts_and_attacks_go_through_them(tmp_path):
    base = models.create_model_and_transforms("mini")[0]
    cfg = FinetuneConfig.from_params(method="tecoa", adaptation="visual_prompt", **SMALL)
    run = training.finetune(cfg, out=tmp_path / "vp.pt", progress=False)
    visual = prompts.prompted_visual(run.model)
    assert all(torch.equal(a, b) for a, b in zip(visual.inner.parameters(), base.visual.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(run.model.clip.transformer.parameters(),
                                                 base.clip.transformer.parameters()))
    start = prompts.attach_prompts(models.create_model_and_transforms("mini")[0],
                                   seed=world.derive_seed(cfg.train_seed, "visual-prompts"))
    assert not torch.equal(visual.pad_prompter.pad_up, prompts.prompted_visual(start).pad_prompter.pad_up)
    state = training.load_checkpoint(tmp_path / "vp.pt")
    assert "visual" not in state and set(state["state_dict"]) == {"module.pad_up", "module.pad_down",
                                                                  "module.pad_left", "module.pad_right"}
    again = prompts.load_prompts(models.create_model_and_transforms("mini")[0], tmp_path / "vp.pt")
    x = world.generate_task("shapes", split="test", seed=0)[0][:8]
    names = world.TASKS["shapes"].classnames()
    emb = build_class_embeddings(base, names, [world.PROMPT_TEMPLATE])
    with torch.no_grad():
        assert torch.equal(again.encode_image(x), run.model.encode_image(x))
        assert not torch.allclose(again.encode_image(x), base.encode_image(x))
    y = torch.zeros(8, dtype=torch.long)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    adv_prompted = attacks.pgd_attack(build_head(again, emb), x, y, eps=4 / 255, steps=3, generator=g())
    adv_plain = attacks.pgd_attack(build_head(base, emb), x, y, eps=4 / 255, steps=3, generator=g())
    assert not torch.equal(adv_prompted, adv_plain)  # the attack's gradient runs through the prompts


def test_tecoa_prompt_checkpoints_round_trip(vit, tmp_path):
    """A file in TeCoA's layout (with its extra entries) loads onto ViT-B/32; what we save loads the same way."""
    import copy

    g = torch.Generator().manual_seed(5)
    released = {"epoch": 10, "best_acc1": 31.5,
                "state_dict": {"module.pad_up": torch.randn(1, 3, 30, 224, generator=g),
                               "module.pad_down": torch.randn(1, 3, 30, 224, generator=g),
                               "module.pad_left": torch.randn(1, 3, 164, 30, generator=g),
                               "module.pad_right": torch.randn(1, 3, 164, 30, generator=g)},
                "add_prompter": {"module.prompt": torch.randn(1, 100, 768, generator=g)}}
    torch.save(released, tmp_path / "model_best.pth.tar")
    assert prompts.is_prompt_file(tmp_path / "model_best.pth.tar")
    model = prompts.load_prompts(copy.deepcopy(vit), tmp_path / "model_best.pth.tar")
    ours = prompts.prompt_checkpoint(model)
    for key, value in released["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value)
    assert torch.equal(ours["add_prompter"]["module.prompt"], released["add_prompter"]["module.prompt"])
    torch.save(ours, tmp_path / "ours.pt")
    twin = prompts.load_prompts(copy.deepcopy(vit), tmp_path / "ours.pt")
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(twin.encode_image(x), model.encode_image(x))
    with pytest.raises(ValueError, match="px images"):
        prompts.load_prompts(models.create_model_and_transforms("mini")[0], tmp_path / "model_best.pth.tar")
    assert not prompts.is_prompt_file(tmp_path / "nothing.pt")


def test_prompted_vit_trains_on_the_paper_code_path(tmp_path):
    """Random ViT-B/32, TinyImageNet fixture: a few prompted steps move padding and token prompts, nothing of CLIP."""
    from paper_fixtures import write_paper_root

    root = write_paper_root(tmp_path, cifar_test=2, tiny_classes=2, tiny_train_per_class=1)
    cfg = FinetuneConfig.from_params(profile="paper", model="ViT-B-32", pretrained="none", data_root=str(root),
                                     method="tecoa", adaptation="visual_prompt", prompt_tokens=4, finetune_steps=2,
                                     train_batch_size=2, warmup_steps=1, finetune_lr=1e-5, train_pgd_steps=1,
                                     checkpoint_every=10)
    run = training.finetune(cfg, out=tmp_path / "vit_vp.pt", progress=False)
    base = models.create_model_and_transforms(**cfg.model_spec())[0]
    visual = prompts.prompted_visual(run.model)
    assert all(torch.equal(a, b) for a, b in zip(visual.inner.parameters(), base.visual.parameters()))
    start = prompts.attach_prompts(models.create_model_and_transforms(**cfg.model_spec())[0], tokens=4,
                                   seed=world.derive_seed(cfg.train_seed, "visual-prompts"))
    moved = prompts.prompted_visual(start)
    assert not torch.equal(visual.token_prompter.prompt, moved.token_prompter.prompt)
    assert not torch.equal(visual.pad_prompter.pad_left, moved.pad_prompter.pad_left)


def test_bad_prompt_parameters_are_refused():
    for params, message in (({"adaptation": "prompting"}, "adaptation"), ({"prompt_pad": 0}, "prompt_pad"),
                            ({"prompt_lr": 0.0}, "prompt_lr"), ({"prompt_tokens": -1}, "prompt_tokens")):
        with pytest.raises(ConfigError, match=message):
            FinetuneConfig.from_params(**params)
    with pytest.raises(ValueError, match="cannot also be prompted"):
        training.finetune(FinetuneConfig.from_params(method="tecoa_partial", adaptation="visual_prompt", **SMALL),
                          out="/nonexistent/x.pt", progress=False)


def test_prompting_finding_verdicts():
    from test_tecoa_baselines import _rows

    from nbhelpers import findings

    ft_ahead = _rows({("tecoa", "clean"): 0.6, ("tecoa", "pgd10"): 0.4, ("tecoa_vp", "clean"): 0.3,
                      ("tecoa_vp", "pgd10"): 0.2})
    f = findings.finding_prompting_vs_finetuning(ft_ahead, n_boot=300)
    assert f.verdict == findings.REPRODUCED and f.estimate == pytest.approx(20.0)
    prompt_ahead = _rows({("tecoa", "clean"): 0.6, ("tecoa", "pgd10"): 0.2, ("tecoa_vp", "clean"): 0.6,
                          ("tecoa_vp", "pgd10"): 0.4})
    assert findings.finding_prompting_vs_finetuning(prompt_ahead, n_boot=300).verdict == findings.NOT_REPRODUCED
    with pytest.raises(ValueError, match="no \\(fine-tuned, prompted\\) pair"):
        findings.finding_prompting_vs_finetuning(_rows({("tecoa", "clean"): 0.5, ("tecoa", "pgd10"): 0.3}))


class TeCoAPadPrompter(torch.nn.Module):
    """TeCoA models/prompters.py PadPrompter(args) (its __init__): four N(0, 1) borders, prompt_size px wide."""

    def __init__(self, prompt_size: int, image_size: int) -> None:
        super().__init__()
        inner = image_size - 2 * prompt_size
        self.pad_up = torch.nn.Parameter(torch.randn([1, 3, prompt_size, image_size]))
        self.pad_down = torch.nn.Parameter(torch.randn([1, 3, prompt_size, image_size]))
        self.pad_left = torch.nn.Parameter(torch.randn([1, 3, inner, prompt_size]))
        self.pad_right = torch.nn.Parameter(torch.randn([1, 3, inner, prompt_size]))


class TeCoATokenPrompter(torch.nn.Module):
    """TeCoA models/prompters.py TokenPrompter(prompt_len): prompt (1, prompt_len, 768)."""

    def __init__(self, prompt_len: int) -> None:
        super().__init__()
        self.prompt = torch.nn.Parameter(torch.randn([1, prompt_len, 768]))


def write_tecoa_prompt_file(path, *, prompt_size: int = 30, add_prompt_size: int = 10) -> dict:
    """A checkpoint exactly as TeCoA's visual_prompt.py writes it: prompter = padding(args) and add_prompter =
    TokenPrompter(add_prompt_len), each wrapped in DataParallel (visual_prompt.py lines ~150-154); SGD over both
    (lr 40, momentum 0.9) after one step; save_checkpoint({'epoch', 'state_dict': prompter.state_dict(),
    'add_prompter': add_prompter.state_dict(), 'best_acc1', 'optimizer': optimizer.state_dict()}) where best_acc1 =
    max(np.mean(acc_all), 0) is a numpy float64, pickled under numpy 1's names (numpy 1.23.3). Returns the state."""
    import numpy as np
    from test_checkpoints import NUMPY1_PICKLE

    torch.manual_seed(11)
    prompter = torch.nn.DataParallel(TeCoAPadPrompter(prompt_size, 224))
    add_prompter = torch.nn.DataParallel(TeCoATokenPrompter(add_prompt_size))
    optimizer = torch.optim.SGD(list(prompter.parameters()) + list(add_prompter.parameters()), lr=40, momentum=0.9,
                                weight_decay=0)
    loss = sum(p.square().sum() for p in [*prompter.parameters(), *add_prompter.parameters()])
    loss.backward()
    optimizer.step()
    best_acc1 = max(np.mean([41.25, 38.5, 12.0]), 0)
    assert type(best_acc1) is np.float64
    state = {"epoch": 1, "state_dict": prompter.state_dict(), "add_prompter": add_prompter.state_dict(),
             "best_acc1": best_acc1, "optimizer": optimizer.state_dict()}
    assert set(state["optimizer"]["state"][0]) == {"momentum_buffer"}
    torch.save(state, path, pickle_module=NUMPY1_PICKLE)
    return state


def test_tecoa_visual_prompt_file_loads_through_the_checkpoints_parameter(tmp_path):
    """Issue 30 item 3: TeCoA's own prompt checkpoint (numpy best_acc1, optimizer state) is read by the one safe
    reader and evaluated through 04/05's 'checkpoints' parameter on top of the base weights."""
    import json
    import pickle

    from nbhelpers import suite
    from nbhelpers.config import EvaluationConfig

    path = tmp_path / "model_best.pth.tar"
    written = write_tecoa_prompt_file(path)
    with pytest.raises(pickle.UnpicklingError, match="numpy"):  # what a bare weights_only load makes of it
        torch.load(path, weights_only=True)
    assert prompts.is_prompt_file(path)
    cfg = EvaluationConfig.from_params(profile="paper", model="ViT-B-32", pretrained="none", configs="knobs",
                                       checkpoints=json.dumps({"TeCoA VP (released)": str(path)}))
    got = suite.released_models(cfg)[suite.released_name("TeCoA VP (released)")]
    assert got.tags["checkpoint_format"] == "TeCoA visual prompts"
    visual = prompts.prompted_visual(got.image_model)
    for key in ("pad_up", "pad_down", "pad_left", "pad_right"):
        assert torch.equal(getattr(visual.pad_prompter, key), written["state_dict"][f"module.{key}"])
    assert torch.equal(visual.token_prompter.prompt, written["add_prompter"]["module.prompt"])
    assert visual.token_prompter.prompt.shape == (1, 10, 768)
