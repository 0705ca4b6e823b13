"""The gallery painted while training (`train.sample_every`): the sample prompts, one image each with a fixed
seed, painted by the adapter as it is (its EMA, with `train.ema_decay`) before the first step, every
`sample_every` steps and at the last.

Each painting goes to the training's MLflow run as images per step (one series per prompt, key `gallery/NN`: the
UI's step slider shows the style arriving) and to `<run>/gallery/` in the object store, whose `index.json` the
evaluation report reads to show a strip per prompt. It paints with the training's own pipeline (its UNet and
text encoder carry the LoRA being trained), LoRA dropout off, with per-image generators: the training's random
state and its adapter are the same with the gallery on or off.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

from PIL import Image

from artlora import contracts
from artlora.diffusion import painting
from artlora.io import runs, storage
from artlora.stages.train.trainer import Trainer

log = logging.getLogger(__name__)


class Gallery:
    def __init__(self, trainer: Trainer, pipe: Any, store: storage.Storage, root: str, start: int):
        config = trainer.config
        self.trainer, self.pipe, self.store = trainer, pipe, store
        self.folder = contracts.gallery_folder(contracts.adapter_folder(root))
        self.index: dict[str, Any] = {
            "prompts": list(config.sample_prompts),
            "seed": config.sample_seed,
            "resolution": config.sample_resolution,
            "steps": [],
        }
        self.index["steps"] = self._painted_before(start)
        self.seconds = 0.0  # spent painting, for the log line at the end

    def _painted_before(self, start: int) -> list[int]:
        """A resumed run keeps the steps its gallery painted up to where it resumes, if it painted the same."""
        uri = storage.join(self.folder, contracts.GALLERY_INDEX)
        if not start or not self.store.exists(uri):
            return []
        before = self.store.get_json(uri)
        same = all(before.get(key) == self.index[key] for key in ("prompts", "seed", "resolution"))
        return [step for step in before.get("steps", []) if step <= start] if same else []

    def due(self, step: int, last: bool) -> bool:
        return last or step % self.trainer.config.sample_every == 0

    def paint(self, step: int) -> None:
        config, began = self.trainer.config, time.perf_counter()
        self.pipe.to(self.trainer.device)  # on a GPU: the VAE (and a frozen text encoder) the steps do not use
        self.pipe.set_progress_bar_config(disable=True)
        prompts = list(config.sample_prompts)
        with self.trainer.evaluating(), self.trainer.autocast():
            images = painting.paint(
                self.pipe,
                prompts,
                [config.sample_seed] * len(prompts),
                resolution=config.sample_resolution,
                steps=config.sample_steps,
                guidance=config.sample_guidance,
            )
        for number, image in enumerate(images):
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            self.store.put_bytes(contracts.gallery_image(self.folder, step, number), png.getvalue(), "image/png")
            runs.log_image(image, contracts.gallery_key(number), step)
        self.index["steps"] = sorted({*self.index["steps"], step})
        self.store.put_json(storage.join(self.folder, contracts.GALLERY_INDEX), self.index)
        spent = time.perf_counter() - began
        self.seconds += spent
        log.info("gallery: %d images at step %d in %.1f s", len(images), step, spent)
