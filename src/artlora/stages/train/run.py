"""Train: a LoRA adapter on the denoiser (UNet or transformer) from cached latents, resumable from the object store.

A run lives under `<storage_root>/runs/<key>/`, the key hashing the resolved config (cache included), so the
same command started again finds the run's checkpoints and continues. Every step's randomness is derived from
(seed, step) alone (see `trainer.py`), which makes a resumed run take the same steps as an uninterrupted one.

With `eval_every`, the held-out denoising loss on the validation split (the evaluate stage's measure: fixed
timesteps, fixed noise) is logged every `eval_every` steps and at the end; early stopping watches it, and the
adapter written is the one with the lowest validation loss. With `sample_every`, the gallery (`gallery.py`) paints
the sample prompts with the adapter as it is, to MLflow as images per step and to `<run>/gallery/`. With
`ema_decay`, validation, the gallery and the adapter files take the EMA of the adapter's weights (`ema.py`), which
the checkpoints keep beside the trained weights.

The adapter folder `<run>/adapter/` holds it twice: `pytorch_lora_weights.safetensors` (diffusers/PEFT layout,
`load_lora_weights`) and `artlora-<key>.safetensors` (kohya layout, for AUTOMATIC1111, Forge, ComfyUI), both
with the base model, dataset fingerprint, config and step in their metadata.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm import tqdm

from artlora import contracts
from artlora.config import TrainConfig
from artlora.config.train import GALLERY_FIELDS
from artlora.data.digests import digest
from artlora.data.latent_cache import LatentSet, load_split, validation_data
from artlora.diffusion import loading, model_sources
from artlora.diffusion.heldout import heldout_loss
from artlora.io import runs, storage, tracking
from artlora.io.lease import Lease
from artlora.stages.train import lora, warm_start
from artlora.stages.train.checkpoints import Checkpoint, latest_checkpoint, save_checkpoint
from artlora.stages.train.early_stopping import EarlyStopping
from artlora.stages.train.errors import TrainError
from artlora.stages.train.gallery import Gallery
from artlora.stages.train.kohya import UnsupportedAdapterError, save_kohya
from artlora.stages.train.sampling import sampler_position
from artlora.stages.train.trainer import DeviceModel, Trainer, process_group

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    adapter_uri: str
    run_id: str
    steps: int  # optimizer steps taken: max_steps, or fewer when early stopping fired
    final_loss: float
    resumed_from: int | None
    adapter_step: int | None = None  # the step whose adapter was written (the best validated one, or the last)
    best_val_loss: float | None = None
    stopped_early: bool = False
    kohya_file: str | None = None  # file name of the kohya-layout copy inside the adapter folder


@dataclass(frozen=True)
class Progress:
    steps: int
    metrics: dict[str, float]
    stopped_early: bool


def run_uri(config: TrainConfig, parent: warm_start.Parent | None = None) -> str:
    """The run's folder, keyed by what makes the adapter (not the experiment's name, nor the gallery's settings):
    with a warm start, the parent's weights too (the same reference, e.g. @champion, may name another version)."""
    settings = config.model_dump(exclude={"experiment", *GALLERY_FIELDS})
    if parent is not None:
        settings["init_from_digest"] = parent.digest
    return contracts.run_folder(config.storage_root, digest(settings)[:16])


def kohya_file_name(config: TrainConfig, parent: warm_start.Parent | None = None) -> str:
    """`artlora-<run key>.safetensors`: unique per run, so adapters dropped into one UI folder never collide."""
    return f"artlora-{run_uri(config, parent).rsplit('/', 1)[-1]}.safetensors"


def validate(trainer: Trainer, data: LatentSet) -> float:
    """The held-out denoising loss of the current adapter (LoRA dropout off while measuring)."""
    with trainer.evaluating():
        if trainer.text_encoders is not None:  # the captions as the adapted text encoders now read them
            data = data.reencoded(trainer.encode_captions)
        config = trainer.config
        model, scheduler = DeviceModel(trainer), trainer.noise_scheduler
        return heldout_loss(trainer.family, model, scheduler, data, config.eval_timesteps, config.seed)


def run(config: TrainConfig) -> TrainResult:
    config.require("cache_uri")
    # Before any work: a bad base model or a tracking store that does not answer fails at once.
    model_sources.check_reference(config.base_model)
    tracking.check()
    parent = warm_start.resolve(config)  # checked before the base model is loaded
    store = storage.get_storage()
    root = run_uri(config, parent)
    adapter_uri = contracts.adapter_folder(root)
    if store.is_complete(adapter_uri):
        log.info("run %s already finished; reusing its adapter", root)
        return TrainResult(adapter_uri=adapter_uri, resumed_from=None, **published(store, adapter_uri))
    processes = process_group()
    with run_lease(processes, store, root) as lease:
        if store.is_complete(adapter_uri):
            log.info("run %s was finished by an identical run while this one waited; reusing its adapter", root)
            return TrainResult(adapter_uri=adapter_uri, resumed_from=None, **published(store, adapter_uri))
        return train(config, store, root, processes, lease, parent)


@contextlib.contextmanager
def run_lease(processes: Accelerator, store: storage.Storage, root: str) -> Iterator[Lease | None]:
    """The run folder's lease for the block, so that an identical run started meanwhile waits instead of writing
    the same checkpoints and adapter: the first process holds it (the others of a distributed run wait until it
    does); None in the others."""
    lease = Lease(store, contracts.lease_object(root)) if processes.is_main_process else None
    with processes.main_process_first():
        if lease is not None:
            lease.acquire()
    try:
        yield lease
    finally:
        if lease is not None:
            lease.release()


def train(
    config: TrainConfig,
    store: storage.Storage,
    root: str,
    processes: Accelerator,
    lease: Lease | None,
    parent: warm_start.Parent | None = None,
) -> TrainResult:
    """Train the run from its newest checkpoint (or from the start) and publish its adapter."""
    adapter_uri = contracts.adapter_folder(root)
    data = load_split(config.given("cache_uri"), "train")
    val_data = validation_data(config.given("cache_uri")) if config.eval_every else None
    with processes.main_process_first():  # the first process downloads an s3:// base model, the others reuse it
        pipe = loading.load_pipeline(config.base_model)
    trainer = Trainer(config, data, pipe, processes)
    stopper = EarlyStopping(config.early_stopping_patience, config.early_stopping_min_delta)
    resume = latest_checkpoint(store, root)
    start, run_id = 0, None
    if resume:
        stopper, run_id = restore(trainer, resume), resume.state["run_id"]
        start = resume.step
        log.info("resuming %s from its checkpoint at step %d", root, resume.step)
    elif parent is not None:
        start_from(trainer, parent)
    tags = {contracts.DATASET_FINGERPRINT_TAG: data.dataset_fingerprint, contracts.BASE_MODEL_TAG: config.base_model}
    tags |= parent.tags if parent is not None else {}
    gallery = Gallery(trainer, pipe, store, root, start) if config.sample_every and processes.is_main_process else None
    with tracked(trainer, run_id, tags) as run_id:
        progress = train_loop(trainer, store, root, start, run_id, val_data, stopper, gallery, lease)
        if processes.is_main_process:
            assert run_id is not None and lease is not None  # the first process tracks the run and holds the lease
            lease.check()
            publish(trainer, store, adapter_uri, run_id, data.dataset_fingerprint, progress, stopper, parent)
    processes.wait_for_everyone()  # every process returns what the first one published
    resumed_from = resume.step if resume else None
    return TrainResult(adapter_uri=adapter_uri, resumed_from=resumed_from, **published(store, adapter_uri))


@contextlib.contextmanager
def tracked(trainer: Trainer, run_id: str | None, tags: dict[str, str]) -> Iterator[str | None]:
    """The MLflow run of the training (with system metrics, if asked) around the loop; the run id inside.
    In a run of several processes only the first one tracks, and logs what all of them measured."""
    if not trainer.accelerator.is_main_process:
        yield run_id
        return
    config = trainer.config
    with runs.stage_run("train", config, run_id=run_id, tags=tags, system_metrics=config.system_metrics) as run:
        yield run.info.run_id


class Meter:
    """Per-step metrics, kept on the device and read back every `log_every` steps in one transfer: reading a
    GPU value waits for the GPU, so reading every step would stop the host from running ahead. Every step is
    still logged, with its own step number."""

    def __init__(self, images_per_step: int, step: int, trainer: Trainer):
        self.images_per_step, self.since, self.began = images_per_step, step, time.perf_counter()
        self.accelerator = trainer.accelerator  # metrics are averaged over the processes; the first one logs
        self.pending: list[tuple[int, dict[str, torch.Tensor], float]] = []
        self.last: dict[str, float] = {}

    def add(self, step: int, metrics: dict[str, torch.Tensor], lr: float) -> None:
        self.pending.append((step, metrics, lr))

    def flush(self) -> dict[str, float]:
        if not self.pending:
            return self.last
        stacked = torch.stack([v.float() for _, m, _ in self.pending for v in m.values()])
        values = iter(self.accelerator.reduce(stacked, reduction="mean").tolist())
        logging_here = self.accelerator.is_main_process
        for step, metrics, lr in self.pending:
            self.last = {name: next(values) for name in metrics} | {"lr": lr}
            if logging_here:
                runs.log_metrics(self.last, step=step, wait=False)
        step, now = self.pending[-1][0], time.perf_counter()
        self.last["images_per_s"] = (step - self.since) * self.images_per_step / (now - self.began)
        if logging_here:
            runs.log_metrics({"images_per_s": self.last["images_per_s"]}, step=step, wait=False)
        self.pending, self.since, self.began = [], step, now
        return self.last


def train_loop(
    trainer: Trainer,
    store: storage.Storage,
    root: str,
    start: int,
    run_id: str | None,  # the MLflow run, which only the first process needs (it checkpoints)
    val_data: LatentSet | None = None,
    stopper: EarlyStopping | None = None,
    gallery: Gallery | None = None,  # the first process's, when train.sample_every is set
    lease: Lease | None = None,  # the first process's hold on the run folder, checked before each checkpoint
) -> Progress:
    config = trainer.config
    stopper = stopper or EarlyStopping(0, 0.0)
    main = trainer.accelerator.is_main_process
    meter = Meter(config.batch_size * config.gradient_accumulation * trainer.processes, start, trainer)
    progress = tqdm(
        range(start, config.max_steps),
        desc="train",
        unit="step",
        initial=start,
        total=config.max_steps,
        disable=not main,
    )
    done, stop = start, False
    if gallery is not None and start == 0:
        gallery.paint(0)  # the base model: where the strip starts
    for step in progress:
        lr = float(trainer.schedule.get_last_lr()[0])  # the rate this step uses
        meter.add(step + 1, trainer.step(step), lr)
        done, val_loss = step + 1, None
        if val_data is not None and (done % config.eval_every == 0 or done == config.max_steps):
            val_loss = validate(trainer, val_data)
            stopper.update(done, val_loss, trainer.measured_adapter())
            if main:
                runs.log_metrics({"val_loss": val_loss, "val_loss_best": stopper.best_loss}, step=done, wait=False)
            stop = stopper.should_stop
        if gallery is not None and gallery.due(done, last=done == config.max_steps or stop):
            gallery.paint(done)
        if done % config.log_every == 0 or done == config.max_steps or stop:
            metrics = meter.flush()
            progress.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{metrics['images_per_s']:.1f}")
        if stop:
            log.info("early stopping at step %d: best validation loss %.5f at step %s", done, *_best(stopper))
            break
        if main and done % config.checkpoint_every == 0 and done < config.max_steps:
            assert run_id is not None  # the first process tracks the run (`tracked`)
            if lease is not None:
                lease.check()
            checkpoint(trainer, store, root, done, run_id, stopper, val_loss)
    return Progress(done, meter.flush(), stop)


def _best(stopper: EarlyStopping) -> tuple[float, int | None]:
    return stopper.best_loss, stopper.best_step


def checkpoint(
    trainer: Trainer,
    store: storage.Storage,
    root: str,
    step: int,
    run_id: str,
    stopper: EarlyStopping,
    val_loss: float | None,
) -> None:
    """Save everything a resumed run needs; log the checkpoint's adapter (diffusers layout) to MLflow."""
    config = trainer.config
    micro_batches = step * config.gradient_accumulation * trainer.processes
    epoch, batch = sampler_position(trainer.sizes, config.batch_size, micro_batches)
    state = {
        **trainer.state_dict(),
        "step": step,
        "run_id": run_id,
        "config": config.model_dump(mode="json"),
        "sampler": {"epoch": epoch, "batch": batch},
        "processes": trainer.processes,
        "early_stopping": stopper.state_dict(),
    }
    save_checkpoint(
        store, root, Checkpoint(step, lora.adapter_state(trainer.parts), state, val_loss), config.keep_checkpoints
    )
    with tempfile.TemporaryDirectory() as tmp:
        with trainer.evaluating():  # the adapter as validation measures it (the EMA, with ema_decay)
            lora.save_adapter(trainer.parts, tmp)
        runs.log_artifact(tmp, f"{contracts.CHECKPOINTS}/{contracts.checkpoint_name(step)}")


def start_from(trainer: Trainer, parent: warm_start.Parent) -> None:
    """The parent's weights as the adapter's first (a parent of the right shape on another family's denoiser, or
    with other layers, is refused here); the optimizer keeps its fresh state."""
    try:
        lora.load_adapter_state(trainer.parts, parent.state)
    except ValueError as err:
        raise TrainError(f"train.init_from {parent.reference} does not fit this run's adapter: {err}") from err


def restore(trainer: Trainer, resume: Checkpoint) -> EarlyStopping:
    """Load a checkpoint into the trainer; the early-stopping state (best adapter included) is returned."""
    config = trainer.config
    saved = resume.state.get("config")
    kept = {"experiment": config.experiment}
    if saved is not None and _adapter_settings({**saved, **kept}) != _adapter_settings(config.model_dump(mode="json")):
        raise TrainError(
            f"the checkpoint at step {resume.step} of {trainer.config.storage_root} was written by another config; "
            "not resuming it (delete that run's checkpoints to start it again)"
        )
    lora.load_adapter_state(trainer.parts, resume.adapter)
    before = resume.state.get("processes", 1)
    if before != trainer.processes:
        log.warning(
            "resuming a run of %d processes with %d: the steps after %d draw other batches than an uninterrupted "
            "run would",
            before,
            trainer.processes,
            resume.step,
        )
    trainer.load_state_dict(resume.state)
    if "early_stopping" in resume.state:
        return EarlyStopping.from_state(resume.state["early_stopping"])
    return EarlyStopping(config.early_stopping_patience, config.early_stopping_min_delta)


def _adapter_settings(config: dict) -> dict:
    """A resolved config less the gallery's settings: a run resumes whatever it paints on the way."""
    return {key: value for key, value in config.items() if key not in GALLERY_FIELDS}


def publish(
    trainer: Trainer,
    store: storage.Storage,
    adapter_uri: str,
    run_id: str,
    dataset_fingerprint: str,
    progress: Progress,
    stopper: EarlyStopping,
    parent: warm_start.Parent | None = None,
) -> None:
    """Write the final adapter (the best validated one, else the last) in both layouts; mark the run complete
    with the run's summary (what `published` reads back)."""
    config = trainer.config
    adapter, adapter_step = final_adapter(trainer, stopper, progress.steps)
    best_val = None if stopper.best_step is None else stopper.best_loss
    extra = {"run_id": run_id, "val_loss": "" if best_val is None else repr(best_val)}
    if parent is not None:  # artlora.init_from and artlora.init_from_digest, as the run's tags
        extra |= {key.removeprefix(contracts.METADATA_PREFIX): value for key, value in parent.tags.items()}
    metadata = lora.provenance(config, adapter_step, dataset_fingerprint, extra)
    with tempfile.TemporaryDirectory() as tmp:
        kohya = write_adapter(trainer, adapter, tmp, metadata, kohya_file_name(config, parent))
        store.upload_dir(tmp, adapter_uri)
        runs.log_artifact(tmp, contracts.ADAPTER)
    summary = {
        "run_id": run_id,
        "steps": progress.steps,
        "final_loss": progress.metrics.get("loss", float("nan")),
        "adapter_step": adapter_step,
        "best_val_loss": best_val,
        "stopped_early": progress.stopped_early,
        "kohya_file": kohya,
    }
    runs.set_tags({contracts.ADAPTER_URI_TAG: adapter_uri, contracts.ADAPTER_STEP_TAG: str(adapter_step)})
    store.mark_complete(adapter_uri, summary)


def final_adapter(trainer: Trainer, stopper: EarlyStopping, steps: int) -> tuple[dict[str, torch.Tensor], int]:
    """The adapter a run publishes, and its step: the best validated one, else the last; either as validation
    measured it (the EMA weights with `ema_decay`)."""
    if stopper.best_adapter is not None and stopper.best_step is not None:  # set together
        return stopper.best_adapter, stopper.best_step
    return trainer.measured_adapter(), steps


def write_adapter(
    trainer: Trainer, adapter: dict[str, torch.Tensor], directory: str, metadata: dict[str, str], kohya_name: str
) -> str | None:
    """`adapter`, loaded into the trainer's parts (the training is over), written into `directory` in both
    layouts (the kohya-layout file as `kohya_name`); that file's name, or None where its layout cannot hold the
    adapter."""
    lora.load_adapter_state(trainer.parts, adapter)
    lora.save_adapter(trainer.parts, directory, metadata)
    return _save_kohya(trainer, Path(directory) / kohya_name, metadata)


def published(store: storage.Storage, adapter_uri: str) -> dict:
    """The summary a finished run's completion marker holds: TrainResult's fields besides the URI and resume."""
    return store.completion(adapter_uri)


def _save_kohya(trainer: Trainer, path: Path, metadata: dict[str, str]) -> str | None:
    try:
        encoders = {name: part for name, part in trainer.parts.items() if part is not trainer.denoiser}
        prediction = trainer.noise_scheduler.config.get("prediction_type", "flow")
        save_kohya(trainer.denoiser, path, prediction, metadata, text_encoders=encoders or None)
    except UnsupportedAdapterError as err:
        log.warning("no kohya-layout file: %s", err)
        return None
    return path.name
