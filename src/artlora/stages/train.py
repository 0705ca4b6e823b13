"""Train: a LoRA adapter on the UNet from cached latents, resumable from the object store.

A run lives under `<storage_root>/runs/<key>/`, the key hashing the resolved config (cache included), so the
same command started again finds the run's checkpoints and continues. Every step's randomness (batch, noise,
timesteps, dropout) is derived from (seed, step) alone, which makes a resumed run take the same steps as an
uninterrupted one.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from tqdm import tqdm

from artlora import lora, models, storage, tracking
from artlora.checkpoints import Checkpoint, latest_checkpoint, save_checkpoint
from artlora.config import TrainConfig
from artlora.latent_cache import LatentSet, load_split
from artlora.losses import PerceptualLoss, diffusion_target, predicted_x0
from artlora.stages.augment import digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    adapter_uri: str
    run_id: str
    steps: int
    final_loss: float
    resumed_from: int | None


def run_uri(config: TrainConfig) -> str:
    return storage.join(config.storage_root, "runs", digest(config.model_dump(exclude={"experiment"}))[:16])


PRECISIONS = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def epoch_batches(sizes: list[int], batch_size: int, seed: int, epoch: int) -> list[tuple[int, torch.Tensor]]:
    """One epoch's batches as (group, indices): every view once, each batch from a single group (bucket).

    Views are shuffled within each group and the batches across groups, seeded by (seed, epoch), so the batch
    of any step is known without replaying the steps before it. A group's last batch may be smaller.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    batches = [
        (group, chunk)
        for group, size in enumerate(sizes)
        for chunk in torch.randperm(size, generator=gen).split(batch_size)
    ]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def batch_for_step(sizes: list[int], batch_size: int, seed: int, step: int) -> tuple[int, torch.Tensor]:
    per_epoch = sum(-(-size // batch_size) for size in sizes)
    epoch, position = divmod(step, per_epoch)
    return epoch_batches(sizes, batch_size, seed, epoch)[position]


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 1)


def seed_for_dropout(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


class Trainer:
    """The model, optimizer and objective of one run; `step` takes one optimizer step."""

    def __init__(self, config: TrainConfig, data: LatentSet, pipe=None):
        """`pipe` is the loaded base pipeline; by default it is loaded from `config.base_model`."""
        self.config, self.device = config, device()
        pipe = pipe or models.load_pipeline(config.base_model)
        # Autocast on GPU only: frozen weights in the low-precision dtype, LoRA weights and optimizer in fp32.
        self.dtype = PRECISIONS[config.mixed_precision] if self.device.type == "cuda" else None
        frozen_dtype = self.dtype or torch.float32
        self.unet = pipe.unet.to(self.device, frozen_dtype)
        self.vae = pipe.vae.to(self.device, frozen_dtype).requires_grad_(False)
        # The whole latent set lives on the device: no per-step host-to-device copies.
        self.data = data.to(self.device)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        torch.manual_seed(config.seed)  # the adapter's random init, the same in every process
        self.params = lora.add_lora(self.unet, config)
        for param in self.params:
            param.data = param.data.float()
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.learning_rate, weight_decay=1e-2, fused=self.device.type == "cuda"
        )
        self.schedule = get_scheduler(
            "linear", self.optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.max_steps
        )
        # fp16 overflows without loss scaling; bf16 and fp32 do not need it.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.perceptual = None
        if config.perceptual_weight > 0:
            self.perceptual = PerceptualLoss(self.vae, config.perceptual_net, config.perceptual_backbone)
            self.perceptual.to(self.device)

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """One optimizer step. Metrics stay on the device (reading them would stall the GPU every step)."""
        config, gen = self.config, step_generator(self.config.seed, step)
        sizes = [len(group) for group in self.data.groups]
        group, index = batch_for_step(sizes, config.batch_size, config.seed, step)
        index = index.to(self.device)
        latents, text = self.data.groups[group].latents[index], self.data.groups[group].text[index]
        noise = torch.randn(latents.shape, generator=gen).to(self.device)
        steps_total = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps_total, (len(index),), generator=gen).to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        torch.manual_seed(seed_for_dropout(config.seed, step))

        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            output = self.unet(noisy, timesteps, text).sample
            target = diffusion_target(self.noise_scheduler, latents, noise, timesteps)
            mse = torch.nn.functional.mse_loss(output.float(), target.float())
            loss, metrics = mse, {"loss_mse": mse.detach()}
            if self.perceptual is not None:
                x0 = predicted_x0(self.noise_scheduler, noisy, output, timesteps)
                perceptual = self.perceptual(x0, latents)
                loss = loss + config.perceptual_weight * perceptual
                metrics["loss_perceptual"] = perceptual.detach()

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), **metrics}

    def checkpoint(self, step: int, run_id: str) -> Checkpoint:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "run_id": run_id,
        }
        return Checkpoint(step, lora.adapter_state(self.unet), state)

    def restore(self, checkpoint: Checkpoint) -> None:
        lora.load_adapter_state(self.unet, checkpoint.adapter)
        self.optimizer.load_state_dict(checkpoint.state["optimizer"])
        self.schedule.load_state_dict(checkpoint.state["schedule"])
        self.scaler.load_state_dict(checkpoint.state["scaler"])


def run(config: TrainConfig) -> TrainResult:
    config.require("cache_uri")
    store = storage.get_storage()
    root = run_uri(config)
    adapter_uri = storage.join(root, "adapter")
    if store.is_complete(adapter_uri):
        done = store.get_json(storage.join(adapter_uri, storage.COMPLETE_MARKER))
        log.info("run %s already finished; reusing its adapter", root)
        return TrainResult(adapter_uri, done["run_id"], done["steps"], done["final_loss"], None)

    data = load_split(config.cache_uri, "train")
    trainer = Trainer(config, data)
    resume = latest_checkpoint(store, root)
    start, run_id = (resume.step, resume.state["run_id"]) if resume else (0, None)
    if resume:
        trainer.restore(resume)
        log.info("resuming %s from its checkpoint at step %d", root, resume.step)
    tags = {"artlora.dataset_fingerprint": data.dataset_fingerprint, "artlora.base_model": config.base_model}
    with tracking.stage_run("train", config, run_id=run_id, tags=tags) as active:
        run_id = active.info.run_id
        metrics = train_loop(trainer, store, root, start, run_id)
        with tempfile.TemporaryDirectory() as tmp:
            lora.save_adapter(trainer.unet, tmp)
            store.upload_dir(tmp, adapter_uri)
            tracking.log_artifact(tmp, "adapter")
        summary = {"run_id": run_id, "steps": config.max_steps, "final_loss": metrics.get("loss", float("nan"))}
        tracking.set_tags({"artlora.adapter_uri": adapter_uri})
        store.mark_complete(adapter_uri, summary)
    return TrainResult(adapter_uri, run_id, config.max_steps, summary["final_loss"], resume.step if resume else None)


def train_loop(trainer: Trainer, store: storage.Storage, root: str, start: int, run_id: str) -> dict[str, float]:
    config = trainer.config
    metrics: dict[str, float] = {}
    progress = tqdm(range(start, config.max_steps), desc="train", unit="step", initial=start, total=config.max_steps)
    began, logged_at = time.perf_counter(), start
    for step in progress:
        on_device = trainer.step(step)
        done = step + 1
        if done % config.log_every == 0 or done == config.max_steps:
            now = time.perf_counter()
            metrics = {name: value.item() for name, value in on_device.items()}
            metrics["lr"] = trainer.schedule.get_last_lr()[0]
            metrics["images_per_s"] = (done - logged_at) * config.batch_size / (now - began)
            began, logged_at = now, done
            progress.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{metrics['images_per_s']:.1f}")
            tracking.log_metrics(metrics, step=done, wait=False)
        if done % config.checkpoint_every == 0 and done < config.max_steps:
            save_checkpoint(store, root, trainer.checkpoint(done, run_id), config.keep_checkpoints)
    return metrics
