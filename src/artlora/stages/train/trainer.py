"""One run's model, optimizer, LR schedule and objective; `Trainer.step` takes one optimizer step.

No storage and no tracking here (the stage, `stages/train/__init__.py`, adds those), so the benchmark can time
exactly this step. Importing it still runs the stage package's `__init__`, which imports the object-store client
and MLflow: a GPU machine without them needs their wheels carried (`bench/train_step.md`).

Every step's randomness (batch, noise, timesteps, caption dropout and variants, noise offset, LoRA dropout) is
derived from (seed, micro-batch index) alone, so a resumed run takes the same steps as an uninterrupted one without
replaying anything; the RNG states are saved with the rest of the state all the same.

What differs between bases (the noising, target, timestep sampling and loss weights, the denoiser's call and its
conditioning, e.g. SDXL's pooled embedding and size/crop time ids) is the model family's (`diffusion.families`);
caption dropout drops the pooled embedding with the caption states.

Several processes (`accelerate launch`, DDP): each takes its own micro-batches, `(step x accumulation + micro) x
processes + rank`, and DDP averages the gradients, so N processes at batch B take the same optimizer steps as one
process at batch B with N times the accumulation.

With `train_text_encoder`, the text encoder(s) get LoRA too and the caption states are computed every step from
the captions' token ids (caption dropout then swaps in the empty caption's ids) instead of read from the cache.

With `preservation_weight`, a term keeps the LoRA model's prediction for the preservation prompts the base's, on the
same noisy latents (`preservation.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler

from artlora.config import TrainConfig
from artlora.data.latents import LatentGroup, LatentSet
from artlora.diffusion import families
from artlora.diffusion.device import default_device
from artlora.diffusion.losses import PerceptualLoss, offset_noise, perceptual_subset, weighted_loss
from artlora.diffusion.text_encoding import TextEncoders
from artlora.stages.train import lora
from artlora.stages.train.ema import AdapterEMA
from artlora.stages.train.errors import TrainError
from artlora.stages.train.preservation import Preservation
from artlora.stages.train.sampling import (
    caption_draws,
    effective_sizes,
    epoch_batches,
    sampler_position,
    seed_for_dropout,
    step_generator,
)

if TYPE_CHECKING:  # Any to mypy (pyproject.toml)
    from diffusers import ModelMixin

PRECISIONS = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def process_group() -> Accelerator:
    """This process's place in the run: under `accelerate launch` (or torchrun) one of several, each on its own
    GPU; otherwise the only one, on the GPU if there is one. Precision is the trainer's own (`mixed_precision`),
    so accelerate is told not to add its autocast. Without a GPU the processes talk over gloo (tests, laptops)."""
    return Accelerator(mixed_precision="no", cpu=default_device().type == "cpu")


# -- architecture ----------------------------------------------------------------------------------------


def check_architecture(data: LatentSet, family: families.Family) -> None:
    """Refuse a cache made for another model family: its latents, caption states and conditioning have other
    shapes and meanings (e.g. SDXL's pooled embeds and time ids, twice as wide caption states)."""
    if data.architecture != family.name:
        made_for = families.FAMILIES[data.architecture].label if data.architecture in families.FAMILIES else None
        raise TrainError(
            f"the latent cache was made for {made_for or data.architecture} but the base model is {family.label}: "
            "run augment with this base model"
        )


# -- optimisation ---------------------------------------------------------------------------------------


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the peak rate, then linear decay to 0, cosine decay to 0, or constant."""
    return get_scheduler(
        SCHEDULES[config.lr_schedule],
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=config.max_steps,
    )


class Trainer:
    """The model, optimizer and objective of one run on cached latents."""

    def __init__(self, config: TrainConfig, data: LatentSet, pipe: Any, accelerator: Accelerator | None = None):
        """`data` is a LatentSet (latent_cache); `pipe` has the base model's denoiser, `vae` and `scheduler`;
        `accelerator` knows the processes of a distributed run (one process when not launched by accelerate)."""
        self.accelerator = accelerator or process_group()
        self.config, self.device = config, self.accelerator.device
        self.processes, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        # Autocast on GPU only: frozen weights in the low-precision dtype, LoRA weights and optimizer in fp32.
        self.dtype = PRECISIONS[config.mixed_precision] if self.device.type == "cuda" else None
        # The whole latent set lives on the device: no per-step host-to-device copies.
        self.family = families.of(pipe)
        self.family.check_config(config)
        check_architecture(data, self.family)
        self.data = data.to(self.device)
        # Repeats (ingest.style_repeats) make a view several of an epoch's places; `sizes` counts the places.
        self.repeats = [group.repeats for group in data.groups]
        self.sizes = effective_sizes([len(group) for group in data.groups], self.repeats)
        self._epoch: tuple[int, list] = (-1, [])
        self.noise_scheduler = self.family.training_scheduler(pipe)
        self.denoiser, denoiser_params = self._adapted_denoiser(getattr(pipe, self.family.denoiser))
        self.text_encoders: TextEncoders | None
        text_params: list[torch.nn.Parameter]
        self.text_encoders, text_params = self._adapted_text_encoders(pipe) if config.train_text_encoder else (None, [])
        self.forward, self.text_forward, self.synced = self._distributed()
        self.params = denoiser_params + text_params
        groups: list[dict[str, Any]] = [{"params": denoiser_params}]
        if text_params:
            groups.append({"params": text_params, "lr": config.text_encoder_learning_rate or config.learning_rate})
        self.optimizer = torch.optim.AdamW(
            groups, lr=config.learning_rate, weight_decay=config.weight_decay, fused=self.device.type == "cuda"
        )
        self.schedule = make_schedule(self.optimizer, config)
        self.ema = AdapterEMA(self.params, config.ema_decay, config.ema_warmup) if config.ema_decay else None
        # fp16 overflows without loss scaling; bf16 and fp32 do not need it.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.perceptual: PerceptualLoss | None = None
        if config.perceptual_weight > 0:
            vae = pipe.vae.to(self.device).requires_grad_(False).eval()
            if self.dtype is not None:
                vae.to(self.dtype)
            self.perceptual = PerceptualLoss(
                vae, config.perceptual_net, config.perceptual_backbone, config.perceptual_scale
            ).to(self.device)
        self.preservation = Preservation(self, pipe) if config.preservation_weight > 0 else None

    def _adapted_denoiser(self, denoiser: ModelMixin) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
        """Attach LoRA in fp32 on the CPU (the same init everywhere), then move; frozen weights get the dtype."""
        if self.config.channels_last:
            # Before LoRA is attached: peft's DoRA reshapes its conv weights with .view(), which needs them
            # contiguous, so only the base weights change layout.
            denoiser.to(memory_format=torch.channels_last)
        torch.manual_seed(self.config.seed)
        lora.add_lora(denoiser.float(), self.config)
        self._place(denoiser)
        if self.config.gradient_checkpointing:
            denoiser.enable_gradient_checkpointing()
        # Training mode turns LoRA dropout on; the denoisers have no other active dropout or batch norm.
        denoiser.train()
        return denoiser, [param for param in denoiser.parameters() if param.requires_grad]

    def _adapted_text_encoders(self, pipe: Any) -> tuple[TextEncoders, list[torch.nn.Parameter]]:
        """LoRA on the text encoder(s) as on the denoiser (fp32 on the CPU, then moved), and every view's token ids
        on the device, per latent group, beside the empty caption's."""
        encoders, params = self.family.text_encoders(pipe), []
        targets = self.family.text_encoder_targets
        for index, encoder in enumerate(encoders.encoders):
            params += lora.add_text_encoder_lora(encoder.float(), self.config, targets, encoders.layers_used(index))
            self._place(encoder)
            if self.config.gradient_checkpointing:
                # transformers 5.23 renamed it; older releases (5.17 on the GPU machines) have only the old name.
                old_name = encoder.gradient_checkpointing_enable
                getattr(encoder, "activation_checkpointing_enable", old_name)()
            encoder.train()
        if not all(group.captions for group in self.data.groups):
            raise TrainError("this latent cache does not list each view's caption: run augment again")
        self.token_ids = [tuple(map(self.to_device, encoders.tokenize(_captions_of(g)))) for g in self.data.groups]
        self.empty_ids = tuple(map(self.to_device, encoders.tokenize([""])))
        return encoders, params

    def _place(self, module: torch.nn.Module) -> None:
        """On the device, frozen weights in the low-precision dtype (LoRA weights stay fp32)."""
        module.to(self.device)
        if self.dtype is not None:
            for param in module.parameters():
                if not param.requires_grad:
                    param.data = param.data.to(self.dtype)

    def _distributed(self) -> tuple[Callable[..., Any], TextEncoders | None, list[torch.nn.Module]]:
        """What the step calls: the denoiser (compiled if asked) and the text encoders, each in DDP when there are
        several processes (DDP averages their gradients); and the DDP modules among them."""
        denoiser = self._wrapped(self.denoiser)
        forward = torch.compile(denoiser) if self.config.torch_compile else denoiser
        encoders = tuple(map(self._wrapped, self.text_encoders.encoders)) if self.text_encoders else ()
        synced = [denoiser, *encoders] if self.processes > 1 else []
        text_forward = replace(self.text_encoders, encoders=encoders) if self.text_encoders else None
        return forward, text_forward, synced

    def _wrapped(self, module: torch.nn.Module) -> torch.nn.Module:
        """In DDP with several processes; as it is with one (accelerate's wrapper would do nothing)."""
        if self.processes == 1:
            return module
        return self.accelerator.prepare_model(module, device_placement=False)

    @property
    def parts(self) -> dict[str, torch.nn.Module]:
        """The components that carry the adapter, by their pipeline names (what `lora.py` saves)."""
        names = ("text_encoder", "text_encoder_2")
        encoders = self.text_encoders.encoders if self.text_encoders else ()
        return {self.family.denoiser: self.denoiser, **dict(zip(names, encoders, strict=False))}

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """LoRA dropout off while measuring, back on afterwards; with `ema_decay`, the EMA weights in the trained
        weights' place (what validation, the gallery and the adapter files take), the trained ones back after."""
        for part in self.parts.values():
            part.eval()
        try:
            with self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext():
                yield
        finally:
            for part in self.parts.values():
                part.train()

    def measured_adapter(self) -> dict[str, torch.Tensor]:
        """A copy of the adapter that validation measures and the adapter files hold: the EMA weights with
        `ema_decay`, else the trained ones."""
        with self.evaluating():
            return lora.adapter_state(self.parts)

    def encode_captions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Caption states through the adapted text encoder(s), as validation reads them (CPU, fp32)."""
        assert self.text_encoders is not None, "only a run that trains the text encoders reads captions through them"
        with self.autocast():
            return self.text_encoders.encode_captions(captions)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    # -- one step -------------------------------------------------------------------------------------

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """One optimizer step over `gradient_accumulation` micro-batches. Metrics stay on the device (reading
        them would stall the GPU every step)."""
        config, micro_batches = self.config, self.config.gradient_accumulation
        with_perceptual = self.perceptual is not None and step % config.perceptual_every == 0
        with_preservation = self.preservation is not None and step % config.preservation_every == 0
        totals: dict[str, list[torch.Tensor]] = {}
        for micro in range(micro_batches):
            # DDP averages the gradients across processes once, after the step's last micro-batch.
            with self._without_sync(micro < micro_batches - 1):
                loss, metrics = self.loss(self.micro_batch_index(step, micro), with_perceptual, with_preservation)
                self.scaler.scale(loss / micro_batches).backward()
            for name, value in metrics.items():
                totals.setdefault(name, []).append(value)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(step)
        return {**{name: torch.stack(values).mean() for name, values in totals.items()}, "grad_norm": grad_norm}

    def micro_batch_index(self, step: int, micro: int) -> int:
        """The micro-batch this process takes as micro-batch `micro` of optimizer step `step`."""
        return (step * self.config.gradient_accumulation + micro) * self.processes + self.rank

    def _without_sync(self, skip: bool) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        for module in self.synced if skip else ():
            stack.enter_context(self.accelerator.no_sync(module))
        return stack

    def micro_batch(self, index: int) -> SimpleNamespace:
        """The latents, captions, noise and timesteps of micro-batch `index`, all fixed by (seed, index).

        Captions are cached states (`text`, `pooled`) or, when the text encoders train, token ids (`ids`)."""
        config, gen = self.config, step_generator(self.config.seed, index)
        group, rows = self.batch(index)
        data, rows = self.data.groups[group], self.to_device(rows)
        latents = data.latents[rows]
        noise_gen = self._noise_generator(index, gen)
        noise = torch.randn(latents.shape, generator=noise_gen, device=noise_gen.device)
        timesteps = self.family.sample_timesteps(self.noise_scheduler, latents.shape, gen, config)
        dropped = None
        if config.caption_dropout:
            dropped = self.to_device(torch.rand(len(rows), generator=gen) < config.caption_dropout)
        if config.noise_offset:
            noise = offset_noise(noise, config.noise_offset, gen)
        # The timesteps stay on the CPU too: choosing the perceptual sub-batch from them needs no GPU sync.
        return SimpleNamespace(
            group=data,
            rows=rows,
            latents=latents,
            **self._captions(group, rows, dropped, index),
            noise=noise,
            timesteps=self.to_device(timesteps),
            cpu_timesteps=timesteps,
        )

    def _captions(self, group: int, rows: torch.Tensor, dropped: torch.Tensor | None, index: int) -> dict[str, Any]:
        """The micro-batch's caption inputs, with the dropped views' swapped for the empty caption's. With caption
        variants each view's is one of its own, drawn by (seed, index); token ids are then the variants'."""
        data = self.data.groups[group]
        chosen, text, pooled = rows, data.text, data.pooled
        if data.variants is not None:
            draws = self.to_device(caption_draws(self.config.seed, index, len(rows)))
            chosen, text, pooled = data.variants.pick(rows, draws), data.variants.text, data.variants.pooled
        if self.text_encoders is not None:
            ids = tuple(tokens[chosen] for tokens in self.token_ids[group])
            if dropped is not None:
                ids = tuple(torch.where(dropped.view(-1, 1), e, t) for e, t in zip(self.empty_ids, ids, strict=True))
            return {"ids": ids, "text": None, "pooled": None}
        text, pooled = text[chosen], None if pooled is None else pooled[chosen]
        if dropped is not None:
            text = torch.where(dropped.view(-1, 1, 1), self.data.empty_text.to(text.dtype), text)
            if pooled is not None:  # the pooled embedding is dropped with the caption
                assert self.data.empty_pooled is not None  # a latent set with pooled embeddings has the empty one
                pooled = torch.where(dropped.view(-1, 1), self.data.empty_pooled.to(pooled.dtype), pooled)
        return {"ids": None, "text": text, "pooled": pooled}

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A small host tensor on the device without stalling: a plain `.to("cuda")` from pageable memory
        synchronises the stream, so the host would wait for the GPU every step instead of running ahead."""
        if self.device.type == "cpu":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def batch(self, index: int) -> tuple[int, torch.Tensor]:
        """`batch_for_step` for micro-batch `index`, with the current epoch's shuffle computed once."""
        epoch, position = sampler_position(self.sizes, self.config.batch_size, index)
        if self._epoch[0] != epoch:
            sizes = [len(group) for group in self.data.groups]
            self._epoch = (epoch, epoch_batches(sizes, self.config.batch_size, self.config.seed, epoch, self.repeats))
        return self._epoch[1][position]

    def _noise_generator(self, index: int, gen: torch.Generator) -> torch.Generator:
        """On a GPU the noise is drawn there, from its own generator seeded by (seed, index): a host-side draw
        would be copied from pageable memory every step, which blocks the host until the GPU catches up."""
        if self.device.type == "cpu":
            return gen
        return torch.Generator(self.device).manual_seed(self.config.seed * 1_000_003 + index + 1)

    def loss(
        self, index: int, with_perceptual: bool, with_preservation: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective on micro-batch `index`: (weighted) MSE or pseudo-Huber error on the model's target, plus
        LPIPS and output preservation (`preservation.py`) if asked."""
        config, scheduler, batch, family = self.config, self.noise_scheduler, self.micro_batch(index), self.family
        noisy = family.add_noise(scheduler, batch.latents, batch.noise, batch.timesteps)
        if config.dropout:
            torch.manual_seed(seed_for_dropout(config.seed, index))  # LoRA dropout's masks
        with self.autocast():
            text, pooled = batch.text, batch.pooled
            if batch.ids is not None:
                assert self.text_forward is not None  # token ids come only with trained text encoders
                text, pooled = self.text_forward.encode(batch.ids)
            conditioning = family.conditioning(batch.group, batch.rows, pooled)
            output = family.predict(self.forward, noisy, batch.timesteps, text, conditioning)
        target = family.target(scheduler, batch.latents, batch.noise, batch.timesteps)
        weights = family.loss_weights(scheduler, batch.timesteps, config)
        if batch.group.loss_weights is not None:  # ingest.style_loss_weights, per view
            style = batch.group.loss_weights[batch.rows]
            weights = style if weights is None else weights * style
        error = weighted_loss(output, target, weights, config.loss, config.huber_delta)
        loss, metrics = error, {f"loss_{config.loss}": error.detach()}
        if with_perceptual:
            loss = self._add_perceptual(loss, metrics, batch, noisy, output)
        if with_preservation:
            assert self.preservation is not None  # asked for only when there is one (`step`)
            kept = self.preservation.term(self, batch, noisy, index, weights)
            loss, metrics["loss_preservation"] = loss + config.preservation_weight * kept, kept.detach()
        metrics["loss"] = loss.detach()
        return loss, metrics

    def _add_perceptual(self, loss, metrics, batch, noisy, output) -> torch.Tensor:
        config = self.config
        chosen = perceptual_subset(batch.cpu_timesteps, config.perceptual_max_timestep, config.perceptual_batch)
        assert self.perceptual is not None  # asked for only when there is one (`step`)
        if len(chosen):
            chosen, timesteps = self.to_device(chosen), batch.timesteps
            x0 = self.family.predicted_x0(self.noise_scheduler, noisy[chosen], output[chosen], timesteps[chosen])
            with self.autocast():
                perceptual = self.perceptual(x0, batch.latents[chosen])
            loss = loss + config.perceptual_weight * perceptual
            metrics["loss_perceptual"] = perceptual.detach()
        return loss

    # -- state ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the adapter that a resumed run needs, plus the RNG states for good measure."""
        state = {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"cpu": torch.get_rng_state()},
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if "ema" not in state:
                raise TrainError("the checkpoint holds no EMA of the adapter, and this run keeps one: start it again")
            self.ema.load_state_dict(state["ema"])
        rng = state.get("rng", {})
        if "cpu" in rng:
            torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])


class DeviceModel:
    """The trainer's denoiser behind the calls that `heldout.heldout_loss` makes with CPU tensors: inputs go to the
    device, the forward runs under the training autocast, the output comes back to the CPU in fp32."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    @property
    def config(self) -> Any:
        return self.trainer.denoiser.config

    def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        device = self.trainer.device
        args = tuple(_to(value, device) for value in args)
        kwargs = {name: _to(value, device) for name, value in kwargs.items()}
        with self.trainer.autocast():
            output = self.trainer.denoiser(*args, **kwargs).sample
        return SimpleNamespace(sample=output.float().cpu())


def _to(value: Any, device: torch.device) -> Any:
    """A tensor (or a dict of them, as `added_cond_kwargs`) on the device; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {name: _to(item, device) for name, item in value.items()}
    return value


def _captions_of(group: LatentGroup) -> tuple[str, ...]:
    """What a group's token ids are made of: its caption variants when it has them, else each view's caption."""
    return group.variants.captions if group.variants is not None else group.captions
