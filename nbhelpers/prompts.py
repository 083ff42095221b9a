"""Visual prompt tuning, TeCoA's second way of adapting CLIP (CLIP frozen, only prompts learn), faithful to TeCoA's
official ``visual_prompt.py``.

- Padding prompt (:class:`PadPrompter`): four learnable border strips ``pad`` pixels wide around a zero centre,
  added (not clamped) to the image after CLIP's normalisation. TeCoA: 30 px at 224 (a 164 x 164 zero centre).
- Token prompts (:class:`TokenPrompter`): ``n`` learnable tokens appended after the class token and the patch
  tokens at the input layer only (after the positional embedding, before ``ln_pre``) of a ViT image tower; the
  read-out stays the class token. A convolutional tower (the mini profile's ResNet) has no tokens: it gets the
  padding prompt alone (ours, the faithful part of TeCoA's design that applies to it).

:func:`attach_prompts` wraps a model's image tower in :class:`PromptedVisual`, so every path that calls the tower
(``ClipModel.encode_image``, the engine's features, every attack) goes through the prompts: attacks are adaptive.
Prompts are saved and read in TeCoA's checkpoint layout: ``state_dict`` holds ``module.pad_up/down/left/right``,
``add_prompter`` holds ``module.prompt`` of shape [1, n, width] (:func:`prompt_checkpoint`, :func:`load_prompts`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from nbhelpers.checkpoints import CheckpointError, load_torch_file
from nbhelpers.models import ClipModel

# bump with any change to the numbers this module computes (see utils.numerics_versions)
NUMERICS_VERSION = 1

TECOA_PAD = 30  # TeCoA's padding width at 224 px
TECOA_SIZE = 224


def default_pad(image_size: int) -> int:
    """TeCoA's 30 px border at 224 px, scaled to another input size (at least 1 px): 4 px for the mini CLIP's 32."""
    return max(1, round(TECOA_PAD * image_size / TECOA_SIZE))


def _randn(shape: tuple[int, ...], generator: torch.Generator) -> nn.Parameter:
    return nn.Parameter(torch.randn(shape, generator=generator))


class PadPrompter(nn.Module):
    """TeCoA's padding prompt: learnable borders `pad` px wide around a zero centre, added to normalised images
    (N, 3, S, S); initialised N(0, 1) from a seeded generator as TeCoA's randn."""

    def __init__(self, image_size: int, pad: int, *, generator: torch.Generator) -> None:
        super().__init__()
        if not 0 < 2 * pad < image_size:
            raise ValueError(f"prompt pad {pad} px leaves no centre in a {image_size} px image")
        self.image_size, self.pad = image_size, pad
        inner = image_size - 2 * pad
        self.pad_up = _randn((1, 3, pad, image_size), generator)
        self.pad_down = _randn((1, 3, pad, image_size), generator)
        self.pad_left = _randn((1, 3, inner, pad), generator)
        self.pad_right = _randn((1, 3, inner, pad), generator)

    def prompt(self) -> torch.Tensor:
        """The full prompt (1, 3, S, S): borders, zero centre."""
        inner = self.image_size - 2 * self.pad
        centre = torch.zeros(1, 3, inner, inner, device=self.pad_up.device, dtype=self.pad_up.dtype)
        middle = torch.cat([self.pad_left, centre, self.pad_right], dim=3)
        return torch.cat([self.pad_up, middle, self.pad_down], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + prompt, broadcast over the batch (N, 3, S, S)."""
        return x + self.prompt().to(x.dtype)


class TokenPrompter(nn.Module):
    """TeCoA's token prompts: `n` learnable tokens (1, n, width), appended to a ViT's token sequence (N, T, width)
    at the input layer; initialised N(0, 1) from a seeded generator."""

    def __init__(self, n: int, width: int, *, generator: torch.Generator) -> None:
        super().__init__()
        self.prompt = _randn((1, n, width), generator)

    def append(self, module: nn.Module, inputs: tuple, tokens: torch.Tensor) -> torch.Tensor:
        """Forward hook on the tower's patch dropout (after the positional embedding, before ln_pre)."""
        return torch.cat([tokens, self.prompt.expand(tokens.shape[0], -1, -1).to(tokens.dtype)], dim=1)


def _is_vit(visual: nn.Module) -> bool:
    return hasattr(visual, "patch_dropout") and hasattr(visual, "class_embedding")


class PromptedVisual(nn.Module):
    """A frozen image tower behind its prompts: normalised images (N, 3, S, S) -> embeddings, through the padding
    prompt and (ViT) the token prompts."""

    def __init__(self, inner: nn.Module, pad: PadPrompter, tokens: TokenPrompter | None) -> None:
        super().__init__()
        self.inner, self.pad_prompter, self.token_prompter = inner, pad, tokens
        if tokens is not None:
            inner.patch_dropout.register_forward_hook(tokens.append)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # attributes of the tower (image_size, output_dim, ...) read through the wrapper
            return getattr(super().__getattr__("inner"), name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) of the prompted images."""
        return self.inner(self.pad_prompter(x))

    def prompt_parameters(self) -> list[nn.Parameter]:
        """The learnable prompt tensors (nothing of CLIP)."""
        return list(self.pad_prompter.parameters()) + (list(self.token_prompter.parameters())
                                                      if self.token_prompter is not None else [])


def attach_prompts(model: ClipModel, *, pad: int = -1, tokens: int = 100, seed: int = 0) -> ClipModel:
    """Wrap model's image tower in its prompts, in place, and return the model: pad px borders (-1: TeCoA's 30 px at
    224 scaled to the model's input), `tokens` token prompts on a ViT tower (0: none; a ResNet tower gets none).
    Prompts are drawn from a generator seeded by `seed`; every CLIP parameter is left as it is."""
    if isinstance(model.clip.visual, PromptedVisual):
        raise ValueError("the model's image tower already has prompts")
    inner = model.clip.visual
    g = torch.Generator().manual_seed(seed)
    first = next(inner.parameters())  # the prompts take the tower's device and precision
    pad_prompter = PadPrompter(model.image_size, default_pad(model.image_size) if pad < 0 else pad, generator=g)
    token_prompter = (TokenPrompter(tokens, inner.class_embedding.shape[-1], generator=g)
                      if tokens > 0 and _is_vit(inner) else None)
    model.clip.visual = PromptedVisual(inner, pad_prompter, token_prompter).to(first.device, first.dtype)
    return model


def prompted_visual(model: ClipModel) -> PromptedVisual:
    """The model's prompted tower, or a clear error."""
    if not isinstance(model.clip.visual, PromptedVisual):
        raise ValueError("the model has no visual prompts (attach_prompts)")
    return model.clip.visual


def prompt_checkpoint(model: ClipModel) -> dict[str, dict[str, torch.Tensor]]:
    """The prompts in TeCoA's layout: {"state_dict": {"module.pad_up", ...}, "add_prompter": {"module.prompt"}}
    (add_prompter empty without token prompts); CPU tensors."""
    visual = prompted_visual(model)
    pads = {f"module.{k}": v.detach().cpu() for k, v in visual.pad_prompter.state_dict().items()}
    tokens = ({"module.prompt": visual.token_prompter.prompt.detach().cpu()}
              if visual.token_prompter is not None else {})
    return {"state_dict": pads, "add_prompter": tokens}


def is_prompt_checkpoint(state: Mapping) -> bool:
    """Whether a loaded checkpoint holds TeCoA-layout prompts (module.pad_up ... in its state_dict)."""
    inner = state.get("state_dict") if isinstance(state, Mapping) else None
    return isinstance(inner, Mapping) and "module.pad_up" in inner


def is_prompt_file(path: str | os.PathLike) -> bool:
    """Whether a file is a torch checkpoint holding TeCoA-layout prompts (read by checkpoints.load_torch_file, the
    one safe reader; False for anything it does not read)."""
    try:
        state = load_torch_file(path, role="prompt checkpoint")
    except (CheckpointError, OSError):  # not a torch file, or not one the safe reader reads: not a prompt checkpoint
        return False
    return is_prompt_checkpoint(state)


def load_prompts(model: ClipModel, source: str | os.PathLike | Mapping) -> ClipModel:
    """Attach the prompts of a TeCoA-layout checkpoint (a file, read by checkpoints.load_torch_file, or its dict) to
    model, in place: the pad width and the token count come from the tensors' shapes, which must fit the model."""
    state = source if isinstance(source, Mapping) else load_torch_file(source, role="prompt checkpoint")
    if not is_prompt_checkpoint(state):
        raise ValueError(f"{source if not isinstance(source, Mapping) else 'the checkpoint'} holds no TeCoA-layout "
                         "prompts (state_dict with module.pad_up, module.pad_down, module.pad_left, module.pad_right)")
    pads = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    up = pads["pad_up"]
    if up.shape[-1] != model.image_size:
        raise ValueError(f"the padding prompt is for {up.shape[-1]} px images, the model takes {model.image_size}")
    token = dict(state.get("add_prompter") or {}).get("module.prompt")
    attach_prompts(model, pad=int(up.shape[2]), tokens=int(token.shape[1]) if token is not None else 0)
    return assign_prompts(model, state)


def assign_prompts(model: ClipModel, state: Mapping) -> ClipModel:
    """Copy a TeCoA-layout checkpoint's prompt values into the model's existing prompts (shapes must match)."""
    visual = prompted_visual(model)
    pads = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    token = dict(state.get("add_prompter") or {}).get("module.prompt")
    if (token is None) != (visual.token_prompter is None):
        raise ValueError("the checkpoint's token prompts and the model's do not match (a ViT tower takes them, "
                         "a convolutional one does not)")
    with torch.no_grad():
        visual.pad_prompter.load_state_dict(pads)
        if token is not None:
            if token.shape != visual.token_prompter.prompt.shape:
                raise ValueError(f"token prompts {tuple(token.shape)} do not fit the tower "
                                 f"{tuple(visual.token_prompter.prompt.shape)}")
            visual.token_prompter.prompt.copy_(token)
    return model
