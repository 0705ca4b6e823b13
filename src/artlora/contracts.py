"""The names the stages agree on, each written once: the MLflow run tags one stage writes and another reads, the
provenance entries of an adapter file, and the layout of a training run's folder in the object store.

A training run lives under `<storage_root>/runs/<key>/` (the key hashes the resolved train config):

    adapter/                     the kept adapter (both file layouts), completed by the train stage's marker
    checkpoints/step-NNNNNNNN/   resumable checkpoints
    eval/                        the evaluate stage's report.html, grid.png, metrics.json
    register/gate.html           the gate's page

A cross-evaluation (evaluate without a training run: any adapter on any cache) writes its report.html, grid.png,
metrics.json, evaluation.json and painted images under `<storage_root>/evaluations/<key>/` instead.

The tags of a registered model version are `data.lineage`'s; the completion marker is `io.storage`'s.
"""

from __future__ import annotations

# -- MLflow run tags ------------------------------------------------------------------------------------

STAGE_TAG = "artlora.stage"  # which stage opened the run (or, suffixed `.<stage>`, continued it)
# The dataset version a run's work came from: ingest, augment and train write it; register reads train's.
DATASET_FINGERPRINT_TAG = "artlora.dataset_fingerprint"
BASE_MODEL_TAG = "artlora.base_model"  # train's base model
# The trained adapter's folder and the step whose weights it holds: train writes them; a search's pick reads them.
ADAPTER_URI_TAG = "artlora.adapter_uri"
ADAPTER_STEP_TAG = "artlora.adapter_step"
# A warm-started run's parent (train.init_from): the version (models:/NAME/VERSION) or folder, and its adapter's
# content digest; register copies both to the version's lineage.
INIT_FROM_TAG = "artlora.init_from"
INIT_FROM_DIGEST_TAG = "artlora.init_from_digest"
SEARCH_WINNER_TAG = "artlora.search.winner"  # on a search's parent run: the winning trial's run id
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: what makes a run show as another's child (a search's trials)
RUN_NAME_TAG = "mlflow.runName"  # MLflow's own: the name a run is listed by

# -- a dataset version's reserved style ------------------------------------------------------------------

# The style label of the regularisation images (ingest.regularisation_source): trained alongside the styles at
# their own weight, never a style the adapter paints, so every list of the dataset's styles leaves it out. Their
# file names in a dataset version start with it (`regularisation/<name under the source>`), and a style folder of
# the style source may not be called so.
REGULARISATION_STYLE = "regularisation"

# -- an adapter file's provenance (safetensors metadata, strings only) ---------------------------------

METADATA_PREFIX = "artlora."
BASE_MODEL_METADATA = METADATA_PREFIX + "base_model"
DATASET_FINGERPRINT_METADATA = METADATA_PREFIX + "dataset_fingerprint"
STEP_METADATA = METADATA_PREFIX + "step"
CONFIG_METADATA = METADATA_PREFIX + "config"  # the resolved train config, as JSON

# -- a training run's folder ---------------------------------------------------------------------------

RUNS = "runs"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
EVALUATION = "eval"
REPORT = "report.html"
GRID = "grid.png"
STYLE_SHEET = (
    "styles.png"  # per style: real held-out images, the base's and the LoRA's (stages/evaluate/style_sheet.py)
)
EVALUATION_METRICS = "metrics.json"
GATE_PAGE = "register/gate.html"
# The gallery painted while training (train.sample_every): `<run>/gallery/index.json` lists the prompts, seeds and
# painted steps, each image at `<run>/gallery/<prompt number NN>/<step NNNNNNNN>.png`; the same images go to the
# training run as MLflow images under the key `gallery/<prompt number>` (the UI's step slider).
GALLERY = "gallery"
GALLERY_INDEX = "index.json"
# Held by the one run that writes the folder's checkpoints and adapter (io/lease.py); absent when none does.
LEASE = "_LEASE"


def _join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def run_folder(storage_root: str, key: str) -> str:
    """`<storage_root>/runs/<key>`: one training run's folder."""
    return _join(storage_root, RUNS, key)


def adapter_folder(run: str) -> str:
    return _join(run, ADAPTER)


def run_of_adapter(adapter_uri: str) -> str:
    """The run folder an adapter folder (`<run>/adapter`) sits in."""
    return adapter_uri.rstrip("/").rsplit("/", 1)[0]


def evaluation_folder(adapter_uri: str) -> str:
    """`<run>/eval`, beside the adapter it evaluates."""
    return _join(run_of_adapter(adapter_uri), EVALUATION)


def report_uri(adapter_uri: str) -> str:
    return _join(evaluation_folder(adapter_uri), REPORT)


def gate_page_uri(adapter_uri: str) -> str:
    return _join(run_of_adapter(adapter_uri), GATE_PAGE)


def gallery_folder(adapter_uri: str) -> str:
    """`<run>/gallery`, beside the adapter whose training painted it."""
    return _join(run_of_adapter(adapter_uri), GALLERY)


def gallery_image(folder: str, step: int, prompt: int) -> str:
    return _join(folder, f"{prompt:02d}", f"{step:08d}.png")


def gallery_key(prompt: int) -> str:
    """The MLflow image key of one gallery prompt (MLflow keeps one series per key, by step)."""
    return f"{GALLERY}/{prompt:02d}"


EVALUATIONS = "evaluations"  # cross-evaluations: `<storage_root>/evaluations/<key>/`, one folder each
EVALUATION_ABOUT = "evaluation.json"  # in a cross-evaluation's folder: what was evaluated, on what
PAINTED = "images"  # in a cross-evaluation's folder: `images/<base|lora>/<style>/<n>.png`, painted per style


def evaluations_folder(storage_root: str, key: str) -> str:
    """`<storage_root>/evaluations/<key>`: one cross-evaluation (an adapter on a cache, with its settings)."""
    return _join(storage_root, EVALUATIONS, key)


def painted_image(folder: str, side: str, style: str, number: int) -> str:
    return _join(folder, PAINTED, side, style, f"{number:02d}.png")


def checkpoints_folder(run: str) -> str:
    return _join(run, CHECKPOINTS)


def checkpoint_name(step: int) -> str:
    """A checkpoint's folder name: `step-NNNNNNNN`, so that listing order is step order."""
    return f"step-{step:08d}"


def checkpoint_folder(run: str, step: int) -> str:
    return _join(checkpoints_folder(run), checkpoint_name(step))


def lease_object(run: str) -> str:
    return _join(run, LEASE)


# The same names as paths of the training run's MLflow artifacts.
REPORT_ARTIFACT = f"{EVALUATION}/{REPORT}"
GRID_ARTIFACT = f"{EVALUATION}/{GRID}"
STYLE_SHEET_ARTIFACT = f"{EVALUATION}/{STYLE_SHEET}"

# -- a registered version's files ---------------------------------------------------------------------------

# A version tag: JSON {relative path: sha256} of every file of the version's logged model (MLmodel, its
# environment files, the adapter files and their metadata), written by register and checked wherever the version's
# files are used (generate, models download, the pyfunc loader, the champion's re-evaluation).
VERSION_MANIFEST_TAG = "artlora.manifest"
# A version tag: JSON {relative path: sha256} of the weight and config files of the base model the version names
# (its `base_model` tag), written by register and checked wherever the base is loaded for the version
# (`diffusion.base_files`).
BASE_MANIFEST_TAG = "artlora.base_manifest"
# Written by MLflow into a model it downloads through the registry (models:/NAME/VERSION): not one of its files.
MLFLOW_DOWNLOAD_FILES = ("registered_model_meta",)
