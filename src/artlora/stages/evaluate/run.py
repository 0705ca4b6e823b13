"""Evaluate: the adapter against its base model, with evidence per style that the style was learned.

Everything is measured the same way for the base model and for base + LoRA, with fixed noise and seeds:
- held-out denoising loss on the validation split, overall and per style, beside the zero predictor's;
- style distances (colour and texture, `style_distance`) of images painted from each style's held-out captions
  to every style's held-out images: a confusion matrix for the base and for the LoRA, beside the same matrix for
  real training images (what learning the styles looks like) and the distance the VAE alone already costs;
- a LoRA strength sweep, how much prompts outside the styles change (content kept), and each painted image's
  nearest training image (memorisation);
- CLIP score and KID when a CLIP model is given locally (`clip_model`); otherwise the report says they were
  skipped.

The numbers go to the training's MLflow run as metrics; the report (HTML, with the training curve from the same
run) and its images go beside the adapter (`<run>/eval/`) and to the run's artifacts.
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypedDict

import numpy as np
from PIL import Image

from artlora import contracts
from artlora.config import EvaluateConfig
from artlora.data.latent_cache import validation_data
from artlora.diffusion import families, loading, model_sources
from artlora.diffusion.adapters import adapter_file, load_adapter, read_by_adapter
from artlora.diffusion.heldout import heldout_metrics
from artlora.io import runs, storage, tracking
from artlora.io.lease import Lease
from artlora.registry import references
from artlora.stages.evaluate import clip_metrics, cross, painting, report, sides
from artlora.stages.evaluate.memorisation import Nearest, nearest_training_images
from artlora.stages.evaluate.sides import Side
from artlora.stages.evaluate.style_distance import StyleDistance, combined, diagonal_minima, scales
from artlora.stages.evaluate.style_sheet import style_sheet

log = logging.getLogger(__name__)

# Per style, `style_movement/<style>`: the LoRA's style distance over the base's (below 1: the LoRA's images moved
# toward the style's held-out images); `style_movement` is the largest of them, the style that moved least, so
# that a gate's `max` holds for every style.
STYLE_MOVEMENT = "style_movement"
# Per style, `other_content_movement/<style>`: the same ratio measured to the base's images of the content prompts
# (scenes outside the styles). A style movement below it is a move toward the style, not toward anything: what a
# single style, with no other style to be confused with, is judged by.
OTHER_CONTENT_MOVEMENT = "other_content_movement"
CURVES = ("loss", "val_loss", "lr")  # the training run's curves the report draws


@dataclass(frozen=True, kw_only=True)
class EvaluateResult:
    report_uri: str
    val_loss_base: float
    val_loss_lora: float
    metrics: dict[str, float] = field(default_factory=dict)  # every number logged to the run
    report_html: str = ""


@dataclass(frozen=True, kw_only=True)
class Heldout:
    """The real images the measures compare with: per style, held-out images and captions (training images
    where there is no validation split), and training images."""

    styles: list[str]
    images: painting.Sets  # style -> (held-out images, their captions)
    training: painting.Sets
    dataset_uri: str
    index: dict  # the latent cache index (the dataset's entries)

    @property
    def prompts(self) -> dict[str, list[str]]:
        """Per style, the held-out captions the models paint from."""
        return {style: self.images[style][1] for style in self.styles}


def run(config: EvaluateConfig) -> EvaluateResult:
    """With `run_id` (the pipeline), the training's adapter into `<run>/eval/` and the training's run; without,
    a cross-evaluation (`cross`): any adapter on any cache, into a folder and a run of its own."""
    config.require("adapter_uri", "cache_uri")
    # Before any work: a bad base model or a tracking store that does not answer fails at once.
    model_sources.check_reference(config.base_model)
    clip_metrics.check_reference(config.clip_model)
    tracking.check()
    if config.run_id is None:
        return cross_evaluate(config)
    if references.is_registered(config.given("adapter_uri")):
        raise cross.CrossEvaluationError(
            f"{config.adapter_uri} is a registered version and run_id names a training run: a version is evaluated "
            "into a folder of its own (leave evaluate.run_id unset)"
        )
    data, heldout = validation_data(config.given("cache_uri")), real_images(config)
    pipe = loading.load_pipeline(config.base_model)
    with tempfile.TemporaryDirectory() as adapter_dir:
        storage.get_storage().download_dir(config.given("adapter_uri"), adapter_dir)
        evidence = measure(config, pipe, data, heldout, adapter_file(adapter_dir))
    metrics = collect_metrics(evidence)
    html = report.render(config, metrics, evidence, training_summary(config), heldout.index)
    publish(config, metrics, html, report.grid(evidence.base.grid, evidence.lora.grid), sheet_of(evidence))
    report_uri = storage.join(contracts.evaluation_folder(config.given("adapter_uri")), contracts.REPORT)
    return _result(report_uri, metrics, html, evidence)


def cross_evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Any adapter (a folder or a registered version, checked) on the cache's validation split, written to
    `<storage_root>/evaluations/<key>/` and to an MLflow run of its own."""
    cache_uri = config.given("cache_uri")
    cross.check_cache(cache_uri)
    with tempfile.TemporaryDirectory() as work:
        subject = cross.fetch(config.given("adapter_uri"), config.base_model, Path(work))
        data, heldout = validation_data(cache_uri), real_images(config)
        pipe = loading.load_pipeline(config.base_model)
        cross.check_fits(pipe, subject, heldout.index, config.base_model)
        evidence = measure(config, pipe, data, heldout, subject.path)
    metrics = collect_metrics(evidence)
    curves = {name: runs.metric_history(subject.training_run, name) for name in CURVES} if subject.training_run else {}
    training = {"completed": subject.completion, "curves": curves, "gallery": []}
    about = cross.about(subject, heldout.index, config)
    html = report.render(config, metrics, evidence, training, heldout.index, about=about)
    folder = cross.folder(config, subject, heldout.index)
    grid = report.grid(evidence.base.grid, evidence.lora.grid)
    published = Published(metrics, html, grid, sheet_of(evidence), evidence, about)
    publish_cross(config, folder, published, cross.tags(subject, heldout.index))
    return _result(storage.join(folder, contracts.REPORT), metrics, html, evidence)


def measure(config: EvaluateConfig, pipe, data, heldout: Heldout, adapter: Path) -> report.Evidence:
    """The base, then base + the adapter file, on every measure, with the same noise and seeds."""
    scheduler = families.of(pipe).training_scheduler(pipe)
    pipe.set_progress_bar_config(disable=True)
    base = sides.measure(pipe, scheduler, data, config, heldout.prompts)
    vae_floor = [painting.through_vae(pipe.vae, heldout.images[style][0]) for style in heldout.styles]
    load_adapter(pipe, adapter)  # LoRA dropout off: it would blur the measure
    data = read_by_adapter(pipe, data)  # encoded again if the adapter trained the text encoder(s) too
    lora = sides.measure(pipe, scheduler, data, config, heldout.prompts)

    sweep = strength_sweep(pipe, config, heldout, base, lora)
    matrices = style_matrices(config, heldout, (base, lora), vae_floor)
    return report.Evidence(
        styles=heldout.styles,
        base=base,
        lora=lora,
        **matrices,
        sweep=sweep,
        sweep_distance=sweep_distances(config, heldout, sweep, matrices["unit"]),
        heldout=heldout.images,
        **memorisation(config, heldout, lora),
        extra=clip_metrics.measure(config.clip_model, heldout.prompts, lora.by_style, heldout.images),
    )


def _result(report_uri: str, metrics: dict[str, float], html: str, evidence: report.Evidence) -> EvaluateResult:
    log.info(
        "held-out loss: base %.5f, LoRA %.5f; styles closest to their own: base %d, LoRA %d of %d; "
        "style movement (LoRA / base, worst style) %s",
        evidence.base.loss.loss,
        evidence.lora.loss.loss,
        metrics["style_hits_base"],
        metrics["style_hits_lora"],
        len(evidence.styles),
        f"{metrics[STYLE_MOVEMENT]:.3f}" if STYLE_MOVEMENT in metrics else "n/a",
    )
    return EvaluateResult(
        report_uri=report_uri,
        val_loss_base=evidence.base.loss.loss,
        val_loss_lora=evidence.lora.loss.loss,
        metrics=metrics,
        report_html=html,
    )


def real_images(config: EvaluateConfig) -> Heldout:
    """The dataset's held-out and training images per style, at the evaluation's resolution."""
    index = storage.get_storage().get_json(config.given("cache_uri"))
    real = painting.dataset_images(index["dataset_uri"], config.resolution, config.images_per_style)
    images = real.get("val") or real["train"]  # validation_data warned already when there is no split
    images.pop(contracts.REGULARISATION_STYLE, None)  # trained alongside the styles, never one of them
    return Heldout(
        styles=sorted(images),
        images=images,
        training=real.get("train", images),
        dataset_uri=index["dataset_uri"],
        index=index,
    )


class StyleMatrices(TypedDict):
    """report.Evidence's fields that style_matrices measures."""

    reference: dict[str, np.ndarray]
    floor: dict[str, np.ndarray]
    unit: dict[str, float]


class Memorisation(TypedDict):
    """report.Evidence's fields that memorisation measures."""

    painted: np.ndarray
    nearest: Nearest


def style_matrices(
    config: EvaluateConfig, heldout: Heldout, painted: tuple[Side, ...], vae_floor: list[np.ndarray]
) -> StyleMatrices:
    """Style distances of each side's images (into its `matrices`, and to the first side's images of the content
    prompts into its `to_content`), of the real training images (the reference:
    what learning the styles looks like) and of held-out images through the VAE alone (the floor), to every
    style's held-out images; and the unit each measure counts in."""
    distance = StyleDistance(config.seed)
    styles = heldout.styles
    columns = [heldout.images[style][0] for style in styles]
    reference = distance.matrices([heldout.training.get(style, heldout.images[style])[0] for style in styles], columns)
    other_content = [painted[0].content] if len(painted[0].content) else []  # the base's: the first side
    for side in painted:
        side.matrices = distance.matrices([side.by_style[style] for style in styles], columns)
        side.to_content = distance.matrices([side.by_style[style] for style in styles], other_content)
    floor = distance.matrices(vae_floor, columns)
    return StyleMatrices(reference=reference, floor=floor, unit=scales(reference))


def strength_sweep(pipe, config: EvaluateConfig, heldout: Heldout, base: Side, lora: Side) -> dict[float, np.ndarray]:
    """One image per style (first caption, seed 0) at each LoRA strength. Strengths 0 and 1 are the base's and
    the LoRA's own first images: reused, not painted again."""
    at_ends = {0.0: base.by_style, 1.0: lora.by_style}
    prompts = [heldout.prompts[style][0] for style in heldout.styles]
    return {
        strength: np.stack([at_ends[strength][style][0] for style in heldout.styles])
        if strength in at_ends
        else painting.paint(pipe, prompts, [0] * len(prompts), config, lora_scale=strength)
        for strength in config.strengths
    }


def sweep_distances(
    config: EvaluateConfig, heldout: Heldout, sweep: dict[float, np.ndarray], unit: dict[str, float]
) -> dict[float, list[float]]:
    """Per strength, each style's sweep image's style distance to that style's held-out images (in the units of
    the confusion matrices): the curve that shows the style arriving as the strength grows."""
    distance, styles = StyleDistance(config.seed), heldout.styles
    columns = [heldout.images[style][0] for style in styles]
    out = {}
    for strength, painted in sweep.items():
        matrix = combined(distance.matrices([painted[i : i + 1] for i in range(len(styles))], columns), unit)
        out[strength] = [float(matrix[i, i]) for i in range(len(styles))]
    return out


def memorisation(config: EvaluateConfig, heldout: Heldout, lora: Side) -> Memorisation:
    """The LoRA's images, in style order, each with its nearest training image (every one of them compared, read
    a chunk at a time)."""
    painted = np.concatenate([lora.by_style[style] for style in heldout.styles])
    nearest = nearest_training_images(
        painted,
        painting.training_images(heldout.dataset_uri, config.resolution),
        config.memorisation_pixel_distance,
        config.memorisation_hash_bits,
    )
    return Memorisation(painted=painted, nearest=nearest)


def collect_metrics(ev: report.Evidence) -> dict[str, float]:
    """Every number the evaluation logs, by its metric name (the finite ones)."""
    base, lora, styles = ev.base, ev.lora, ev.styles
    base_c, lora_c = combined(base.matrices, ev.unit), combined(lora.matrices, ev.unit)
    reference_c, floor_c = combined(ev.reference, ev.unit), combined(ev.floor, ev.unit)
    metrics = {
        **heldout_metrics(base.loss.loss, lora.loss.loss),
        "val_loss_zero_predictor": base.loss.zero_predictor,
        "caption_gap_base": base.caption_gap,
        "caption_gap_lora": lora.caption_gap,
        **{f"val_loss_base/{s}": v for s, v in base.loss.per_style.items()},
        **{f"val_loss_lora/{s}": v for s, v in lora.loss.per_style.items()},
        "style_hits_base": float(sum(diagonal_minima(base_c))),
        "style_hits_lora": float(sum(diagonal_minima(lora_c))),
        "style_hits_reference": float(sum(diagonal_minima(reference_c))),
        **{f"style_distance_base/{s}": float(base_c[i, i]) for i, s in enumerate(styles)},
        **{f"style_distance_lora/{s}": float(lora_c[i, i]) for i, s in enumerate(styles)},
        **{f"style_distance_reference/{s}": float(reference_c[i, i]) for i, s in enumerate(styles)},
        **{f"style_distance_floor/{s}": float(floor_c[i, i]) for i, s in enumerate(styles)},
        **style_movement(base_c, lora_c, styles),
        **other_content_movement(base, lora, ev.unit, styles),
        "content_change": float(np.mean([_rms(a, b) for a, b in zip(base.content, lora.content, strict=True)])),
        "style_change": float(
            np.mean([_rms(a, b) for s in styles for a, b in zip(base.by_style[s], lora.by_style[s], strict=True)])
        ),
        "memorised_images": float(sum(match.flagged for match in ev.nearest.matches)),
        **ev.extra,
    }
    return {key: value for key, value in metrics.items() if np.isfinite(value)}


def style_movement(base_c: np.ndarray, lora_c: np.ndarray, styles: list[str]) -> dict[str, float]:
    """Per style, the LoRA's style distance to the style's held-out images over the base's (below 1: moved toward
    the style), and their largest (`STYLE_MOVEMENT`: the style that moved least); only finite ratios count."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = {s: float(lora_c[i, i] / base_c[i, i]) for i, s in enumerate(styles)}
    finite = [value for value in ratios.values() if np.isfinite(value)]
    worst = {STYLE_MOVEMENT: max(finite)} if len(finite) == len(styles) and finite else {}
    return {**{f"{STYLE_MOVEMENT}/{s}": value for s, value in ratios.items()}, **worst}


def other_content_movement(base: Side, lora: Side, unit: dict[str, float], styles: list[str]) -> dict[str, float]:
    """Per style, the LoRA's distance from its images of the style to the base's images of the content prompts
    over the base's (`OTHER_CONTENT_MOVEMENT`); nothing without content prompts."""
    if not len(base.content) or not base.to_content:
        return {}
    base_d, lora_d = combined(base.to_content, unit)[:, 0], combined(lora.to_content, unit)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {f"{OTHER_CONTENT_MOVEMENT}/{s}": float(lora_d[i] / base_d[i]) for i, s in enumerate(styles)}


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean square pixel difference of two same-size uint8 images, colours in [0, 1]."""
    difference = (a.astype(np.float32) - b.astype(np.float32)) / 255
    return float(np.sqrt(np.mean(difference**2)))


def sheet_of(evidence: report.Evidence) -> Image.Image:
    """The style sheet: per style, real held-out images, the base's and the LoRA's."""
    real = {style: evidence.heldout[style][0] for style in evidence.styles}
    return style_sheet(evidence.styles, real, evidence.base.by_style, evidence.lora.by_style)


def publish(
    config: EvaluateConfig, metrics: dict[str, float], html: str, grid: Image.Image, sheet: Image.Image
) -> None:
    """The report, the grid, the style sheet and the metrics beside the adapter (`<run>/eval/`), and to the
    training's run; under the run folder's lease, so that two identical runs evaluating the same adapter write one
    after the other."""
    store, folder = storage.get_storage(), contracts.evaluation_folder(config.given("adapter_uri"))
    grid_png, sheet_png = _png(grid), _png(sheet)
    with Lease(store, contracts.lease_object(contracts.run_of_adapter(config.given("adapter_uri")))):
        store.put_bytes(storage.join(folder, contracts.GRID), grid_png, content_type="image/png")
        store.put_bytes(storage.join(folder, contracts.STYLE_SHEET), sheet_png, content_type="image/png")
        store.put_json(storage.join(folder, contracts.EVALUATION_METRICS), metrics)
        store.put_bytes(storage.join(folder, contracts.REPORT), html.encode(), content_type="text/html")
        with runs.stage_run("evaluate", config, run_id=config.run_id):
            runs.log_metrics(metrics)
            runs.log_bytes(grid_png, contracts.GRID_ARTIFACT)
            runs.log_bytes(sheet_png, contracts.STYLE_SHEET_ARTIFACT)
            runs.log_bytes(html.encode(), contracts.REPORT_ARTIFACT)


class Published(NamedTuple):
    """What a cross-evaluation writes to its folder."""

    metrics: dict[str, float]
    html: str
    grid: Image.Image
    sheet: Image.Image
    evidence: report.Evidence
    about: dict


def publish_cross(config: EvaluateConfig, folder: str, out: Published, tags: dict[str, str]) -> None:
    """A cross-evaluation's report, grid, metrics, what it evaluated (`evaluation.json`) and the images each side
    painted per style, into its own folder (under that folder's lease), and to an MLflow run of its own."""
    store, grid_png, sheet_png = storage.get_storage(), _png(out.grid), _png(out.sheet)
    painted = [
        (contracts.painted_image(folder, side, style, n), _png(Image.fromarray(image)))
        for side, by_style in (("base", out.evidence.base.by_style), ("lora", out.evidence.lora.by_style))
        for style in out.evidence.styles
        for n, image in enumerate(by_style[style])
    ]
    with Lease(store, contracts.lease_object(folder)):
        storage.parallel(lambda item: store.put_bytes(*item, content_type="image/png"), painted)
        store.put_bytes(storage.join(folder, contracts.GRID), grid_png, content_type="image/png")
        store.put_bytes(storage.join(folder, contracts.STYLE_SHEET), sheet_png, content_type="image/png")
        store.put_json(storage.join(folder, contracts.EVALUATION_METRICS), out.metrics)
        store.put_json(storage.join(folder, contracts.EVALUATION_ABOUT), out.about)
        store.put_bytes(storage.join(folder, contracts.REPORT), out.html.encode(), content_type="text/html")
        with runs.stage_run("evaluate", config, tags=tags):
            runs.log_metrics(out.metrics)
            runs.log_bytes(grid_png, contracts.GRID_ARTIFACT)
            runs.log_bytes(sheet_png, contracts.STYLE_SHEET_ARTIFACT)
            runs.log_bytes(out.html.encode(), contracts.REPORT_ARTIFACT)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def training_summary(config: EvaluateConfig) -> dict:
    """The training's curve (loss, validation loss, learning rate by step) from its MLflow run, and the summary
    its completion marker holds (steps, the step whose adapter was kept, early stopping)."""
    completed = storage.get_storage().completion(config.given("adapter_uri"))
    curves = {name: runs.metric_history(config.given("run_id"), name) for name in CURVES}
    return {"completed": completed, "curves": curves, "gallery": gallery(config.given("adapter_uri"))}


def gallery(adapter_uri: str, most: int = 12) -> list[dict]:
    """The gallery the training painted (`train.sample_every`), per prompt: its seed, and its images at up to
    `most` of the painted steps (evenly spread, the first and the last among them); none without a gallery."""
    store, folder = storage.get_storage(), contracts.gallery_folder(adapter_uri)
    index_uri = storage.join(folder, contracts.GALLERY_INDEX)
    if not store.exists(index_uri):
        return []
    index = store.get_json(index_uri)
    painted = index["steps"]
    steps = sorted({painted[round(i)] for i in np.linspace(0, len(painted) - 1, min(most, len(painted)))})

    def read(place: tuple[int, int]) -> np.ndarray:
        data = store.get_bytes(contracts.gallery_image(folder, *place))
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    places = [(step, number) for number in range(len(index["prompts"])) for step in steps]
    pictures = dict(zip(places, storage.parallel(read, places), strict=True))
    return [
        {
            "prompt": prompt,
            "seed": index["seed"],
            "steps": steps,
            "images": [pictures[(step, number)] for step in steps],
        }
        for number, prompt in enumerate(index["prompts"])
    ]
