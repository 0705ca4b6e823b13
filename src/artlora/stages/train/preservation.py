"""Output preservation (ai-toolkit's `diff_output_preservation`): on the noisy latents of the style's micro-batch,
the base model's own prediction for a preservation prompt (a class or blank prompt, LoRA off) is the target of the
LoRA model's prediction for the same prompt. The term, `preservation_weight` x that MSE (weighted per sample as the
main loss), keeps the adapter from changing what the base paints for prompts that are not the style's.

The prompts' caption states are made once. Without `train_text_encoder` teacher and student read the same: the
latent cache's empty caption for the empty prompt, else the base's text encoders' states, checked to encode as the
cache did (its empty caption). With `train_text_encoder` the teacher's come from the encoders with their LoRA off
(once) and the student's through the adapted encoders every step, from token ids kept on the device.

Everything a family differs in (the call, pooled embeddings, SDXL's time ids) goes through the family's
`conditioning` and `predict`, as the main loss does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from artlora.diffusion.losses import weighted_mse
from artlora.stages.train.errors import TrainError

if TYPE_CHECKING:
    from artlora.stages.train.trainer import Trainer


@contextlib.contextmanager
def adapters_off(*modules: torch.nn.Module) -> Iterator[None]:
    """Every LoRA (and DoRA) layer in `modules` off for the block: the modules compute as the base model did.
    peft turns the adapters' gradients off with them; turning them back on restores those of the active adapter."""
    layers = [layer for module in modules for layer in module.modules() if isinstance(layer, BaseTunerLayer)]
    were_off = [layer.disable_adapters for layer in layers]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer, off in zip(layers, were_off, strict=True):
            layer.enable_adapters(not off)


class Preservation:
    """The preservation prompts' states, and the term on one micro-batch."""

    def __init__(self, trainer: Trainer, pipe: Any):
        prompts = list(trainer.config.preservation_prompts)
        self.count = len(prompts)
        self.ids: tuple[torch.Tensor, ...] | None = None
        if trainer.text_encoders is not None:
            with adapters_off(*trainer.text_encoders.encoders):
                hidden, pooled = trainer.encode_captions(prompts)
            self.ids = tuple(map(trainer.to_device, trainer.text_encoders.tokenize(prompts)))
        elif set(prompts) == {""}:
            data = trainer.data
            hidden = data.empty_text.expand(self.count, *data.empty_text.shape)
            pooled = None if data.empty_pooled is None else data.empty_pooled.expand(self.count, -1)
        else:
            hidden, pooled = base_states(trainer, pipe, prompts)
        self.hidden = hidden.to(trainer.device)
        self.pooled = None if pooled is None else pooled.to(trainer.device)

    def choice(self, index: int, samples: int) -> torch.Tensor:
        """Which prompt each sample of micro-batch `index` takes: the prompts in turn, across micro-batches."""
        return (index * samples + torch.arange(samples)) % self.count

    def term(self, trainer: Trainer, batch: SimpleNamespace, noisy: torch.Tensor, index: int, weights) -> torch.Tensor:
        """The MSE between the LoRA model's and the base's predictions for the preservation prompts on `noisy`
        (the micro-batch's noisy latents at its timesteps), weighted per sample by `weights` as the main loss."""
        family, choice = trainer.family, trainer.to_device(self.choice(index, len(noisy)))
        hidden, pooled = self.hidden[choice], None if self.pooled is None else self.pooled[choice]
        with torch.no_grad(), adapters_off(trainer.denoiser), trainer.autocast():
            conditioning = family.conditioning(batch.group, batch.rows, pooled)
            target = family.predict(trainer.denoiser, noisy, batch.timesteps, hidden, conditioning)
        with trainer.autocast():
            if self.ids is not None:  # the student reads the prompts through the adapted text encoders
                assert trainer.text_forward is not None  # token ids are kept only when the text encoders train
                every_hidden, every_pooled = trainer.text_forward.encode(self.ids)
                hidden = every_hidden[choice]
                pooled = None if every_pooled is None else every_pooled[choice]
            conditioning = family.conditioning(batch.group, batch.rows, pooled)
            output = family.predict(trainer.forward, noisy, batch.timesteps, hidden, conditioning)
        return weighted_mse(output, target, weights)


def base_states(trainer: Trainer, pipe: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompts' states from the base's text encoders, refused unless they encode the empty caption as the
    latent cache holds it (e.g. a cache made with other T5 settings, `augment.t5` / `max_t5_length`)."""
    encoders = trainer.family.text_encoders(pipe)
    hidden, pooled = encoders.encode_captions(["", *prompts])
    cached = trainer.data.empty_text.float().cpu()
    if hidden.shape[1:] != cached.shape or not torch.allclose(hidden[0], cached, atol=1e-3, rtol=1e-2):
        raise TrainError(
            "train.preservation_prompts: the base's text encoders do not encode captions as this latent cache holds "
            "them (made with other text settings, e.g. augment.t5 or max_t5_length): use the empty preservation "
            "prompt, which the cache holds, or make the cache with the default text settings"
        )
    return hidden[1:], None if pooled is None else pooled[1:]
