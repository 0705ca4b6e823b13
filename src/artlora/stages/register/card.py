"""The model card: what a person reads on a version's MLflow page (its description, in Markdown) and in
`artlora models show`.

It says what the version paints (styles, and the words every training caption of a style carries: the words to
prompt with), from which base and dataset, how it compares with the base model and the champion (the gate's
rules and the key metrics side by side), the per-style figures, and where the report, the samples and the
gallery painted while training are.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from artlora import contracts
from artlora.data import dataset, lineage
from artlora.io import storage
from artlora.stages.register.gate import Decision
from artlora.stages.register.report import compared_with

REGULARISATION = contracts.REGULARISATION_STYLE  # trained alongside the styles, never one of them

# (metric, what it says): the rows of the comparison with the base model and the champion.
COMPARED = (
    ("val_loss_lora", "held-out denoising loss (lower is better)"),
    ("style_hits_lora", "styles painted closest to their own held-out images (higher is better)"),
    ("caption_gap_lora", "caption gap: loss with another style's caption minus its own (higher: reads the style)"),
    ("content_change", "pixel change on prompts outside the styles (RMS; lower keeps content)"),
    ("memorised_images", "painted images flagged as near copies of training images"),
)


@dataclass(frozen=True, kw_only=True)
class Styles:
    """The dataset's styles as the card shows them: images per split, and the words every caption carries."""

    fingerprint: str
    uri: str
    train: Counter
    heldout: Counter
    words: dict[str, str]
    regularisation: int = 0  # regularisation images trained alongside (ingest.regularisation_source): no style


def dataset_styles(dataset_uri: str) -> Styles:
    """The styles of a dataset version; its regularisation images are counted apart (they are not a style)."""
    everything = dataset.load_items(dataset_uri)
    items = [item for item in everything if item.style != REGULARISATION]
    captions: dict[str, list[str]] = {}
    for item in items:
        captions.setdefault(item.style, []).append(item.caption)
    return Styles(
        fingerprint=dataset.fingerprint_of(dataset_uri),
        uri=dataset_uri,
        train=Counter(item.style for item in items if item.split == "train"),
        heldout=Counter(item.style for item in items if item.split != "train"),
        words={style: common_words(texts) for style, texts in sorted(captions.items())},
        regularisation=len(everything) - len(items),
    )


# Words every caption may share without naming anything: not trigger words.
_FILLER = frozenset({"a", "an", "the", "of", "in", "on", "at", "with", "and", "by", "to", "for", "from"})


def common_words(captions: list[str]) -> str:
    """The words (in the first caption's order) that every caption contains: a trigger word, a style's name."""
    tokenised = [[w for w in re.findall(r"[\w'-]+", caption.lower()) if w not in _FILLER] for caption in captions]
    shared = set(tokenised[0]).intersection(*map(set, tokenised[1:])) if tokenised else set()
    return " ".join(dict.fromkeys(word for word in tokenised[0] if word in shared)) if tokenised else ""


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"


def _styles_section(styles: Styles | None) -> list[str]:
    if styles is None:
        return ["## Styles", "", "The dataset version could not be read back; see the lineage tags."]
    rows = [
        _row(f"`{s}`", str(styles.train[s]), str(styles.heldout[s]), f"`{w}`" if w else "-")
        for s, w in styles.words.items()
    ]
    return [
        "## Styles and trigger words",
        "",
        "Prompt with the words every training caption of the style carries.",
        "",
        _row("style", "training images", "held-out images", "trigger words"),
        _row("---", "---:", "---:", "---"),
        *rows,
    ]


def _lineage_section(tags: Mapping[str, str], styles: Styles | None) -> list[str]:
    size = "" if styles is None else f", {sum(styles.train.values()) + sum(styles.heldout.values())} images "
    split = (
        "" if styles is None else f"({sum(styles.train.values())} training, {sum(styles.heldout.values())} held out)"
    )
    if styles is not None and styles.regularisation:
        split += f" and {styles.regularisation} regularisation images"
    return [
        "## Lineage",
        "",
        f"- Base model: `{tags.get(lineage.BASE_MODEL, '?')}`",
        f"- Dataset version: `{tags.get(lineage.DATASET_FINGERPRINT, '?')}`{size}{split}"
        + ("" if styles is None else f", at `{styles.uri}`"),
        f"- Adapter: `{tags.get(lineage.ADAPTER_URI, '?')}`, kept at step {tags.get(lineage.ADAPTER_STEP, '?')}",
        f"- Code: {tags.get(lineage.CODE_VERSION, '?')}; train config digest `{tags.get(lineage.CONFIG_DIGEST, '?')}`",
    ]


def _gate_section(decision: Decision, metrics: Mapping[str, float]) -> list[str]:
    champion = decision.champion
    header = ["measure", "base model", "this version"] + (
        [f"champion (version {champion.version})"] if champion else []
    )
    rows = []
    for name, meaning in COMPARED:
        if name not in metrics:
            continue
        base_name = name.replace("_lora", "_base") if name.endswith("_lora") else ""
        cells = [f"{meaning} `{name}`", _number(metrics.get(base_name)) if base_name else "-", _number(metrics[name])]
        if champion:
            cells.append(_number(champion.metrics.get(name)))
        rows.append(_row(*cells))
    rules = [_row(o.rule, "pass" if o.passed else "**fail**", o.detail) for o in decision.outcomes]
    return [
        f"## Gate: {decision.alias}",
        "",
        f"{decision.reason}. Compared with: {compared_with(decision)}.",
        "",
        _row("rule", "outcome", "values"),
        _row("---", "---", "---"),
        *rules,
        "",
        _row(*header),
        _row(*(["---"] + ["---:"] * (len(header) - 1))),
        *rows,
    ]


def _per_style_section(metrics: Mapping[str, float], styles: list[str]) -> list[str]:
    rows = []
    for s in styles:
        base, lora = metrics.get(f"val_loss_base/{s}"), metrics.get(f"val_loss_lora/{s}")
        change = f"{(lora / base - 1) * 100:+.1f}%" if base and lora is not None else "-"
        distances = [_number(metrics.get(f"style_distance_{side}/{s}")) for side in ("base", "lora")]
        rows.append(_row(f"`{s}`", _number(base), _number(lora), change, *distances))
    return [
        "## Per style",
        "",
        _row("style", "held-out loss, base", "LoRA", "change", "style distance, base", "LoRA"),
        _row("---", "---:", "---:", "---:", "---:", "---:"),
        *rows,
    ]


def _links_section(tags: Mapping[str, str], run_id: str, tracking_uri: str) -> list[str]:
    adapter = tags.get(lineage.ADAPTER_URI, "")
    grid = storage.join(contracts.evaluation_folder(adapter), contracts.GRID) if adapter else ""
    lines = ["## Report and samples", ""]
    if tracking_uri.startswith(("http://", "https://")):
        served = f"{tracking_uri.rstrip('/')}/get-artifact?run_uuid={run_id}&path="
        lines.append(f"- [Evaluation report]({served}{contracts.REPORT_ARTIFACT}) (served by MLflow)")
        lines.append(f"- [Samples, base vs LoRA]({served}{contracts.GRID_ARTIFACT})")
    lines += [
        f"- Evaluation report: `{tags.get(lineage.REPORT_URI) or contracts.report_uri(adapter)}`"
        f" (run artifact `runs:/{run_id}/{contracts.REPORT_ARTIFACT}`)",
        f"- Samples grid: `{grid}` (run artifact `runs:/{run_id}/{contracts.GRID_ARTIFACT}`)",
        f"- Gate page: `{tags.get(lineage.GATE_REPORT_URI, '-')}`",
        f"- Painted while training (when `train.sample_every` is set): the run's images `{contracts.GALLERY}/NN` "
        f"(MLflow's step slider) and `{contracts.gallery_folder(adapter)}`",
    ]
    return lines


def model_card(
    *,
    model: str,
    version: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    decision: Decision,
    styles: Styles | None,
    run_id: str,
    tracking_uri: str,
) -> str:
    """The card in Markdown."""
    names = (
        sorted(styles.words)
        if styles
        else sorted({k.split("/", 1)[1] for k in metrics if k.startswith("val_loss_lora/")} - {REGULARISATION})
    )
    title = f"# {model} version {version}: " + (", ".join(names) or "style LoRA")
    sections = [
        [
            title,
            "",
            f"A LoRA adapter for `{tags.get(lineage.BASE_MODEL, '?')}` that paints in "
            f"{len(names)} style(s). Gate: **{decision.alias}**.",
        ],
        _styles_section(styles),
        _lineage_section(tags, styles),
        _gate_section(decision, metrics),
        _per_style_section(metrics, names),
        _links_section(tags, run_id, tracking_uri),
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
