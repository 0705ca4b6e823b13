"""`artlora ingest | augment | train | evaluate | register`: one stage alone, with its config keys in `--help`."""

from __future__ import annotations

import argparse
import importlib
import json
import textwrap
import types
import typing

from pydantic import BaseModel

from artlora.cli.common import command, config_arguments, print_result
from artlora.config import STAGES
from artlora.config.pipeline import stage_model

SUMMARY = {
    "ingest": "curate raw images into a versioned dataset, every input accounted for",
    "augment": "encode augmented views of a dataset into the latent cache",
    "train": "train a LoRA adapter from the latent cache (resumes from checkpoints)",
    "evaluate": "compare the adapter with its base model on held-out data and sample images (without run_id: any "
    "adapter, a folder or models:/..., on any dataset version's cache, into a folder of its own)",
    "register": "register the adapter in MLflow; the gate picks its alias",
}
# Inputs the pipeline fills from the stage before; a stage run alone takes them with --set.
INPUTS = ("_uri", "run_id")


def add_commands(commands: argparse._SubParsersAction) -> None:
    for stage in STAGES:
        sub = command(
            commands,
            stage,
            f"run the {stage} stage alone: {SUMMARY[stage]}",
            description=stage_help(stage),
        )
        config_arguments(sub)
        sub.set_defaults(handler=run_stage)


def run_stage(args: argparse.Namespace) -> int:
    # Only the stage asked for is imported, and here, not at the top: augment, train and evaluate load torch and
    # diffusers (seconds of CPU), which `artlora --help`, `ingest` and `register` do not need.
    config = args.pipeline_config
    if args.command == "train":  # with train.gpus >= 2, under `accelerate launch` (unless already launched)
        from artlora.tasks.launch import run_train

        print_result(run_train(config))
    else:
        stage = importlib.import_module(f"artlora.stages.{args.command}.run")
        print_result(stage.run(getattr(config, args.command)))
    return 0


def stage_help(stage: str) -> str:
    model = stage_model(stage)
    return "\n".join(
        [
            f"Run the {stage} stage with the `{stage}:` section of --config; the shared keys at the top of the file",
            "(storage_root, base_model, experiment, seed, model_name) apply to it too. Inputs marked 'from the stage",
            "before' are filled by the pipeline; running this stage alone, pass them with --set.",
            "",
            f"config keys ({stage}.KEY):",
            *key_lines(model, stage),
        ]
    )


def key_lines(model: type[BaseModel], section: str, values: BaseModel | None = None) -> list[str]:
    """One entry per key of the section, with its type, default and description; a nested section (such as
    cluster.train) lists its own keys, with the defaults it has there (`values`)."""
    lines = []
    for name, field in model.model_fields.items():
        value = getattr(values, name) if values is not None else field.get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            lines += key_lines(type(value), f"{section}.{name}", value)
            continue
        if name.endswith(INPUTS):
            default = "from the stage before"
        elif values is None and field.is_required():
            default = "required"
        else:
            default = f"default {json.dumps(value, default=_as_written)}"
        lines.append(f"  {section}.{name}  ({type_name(field.annotation)}; {default})")
        lines += textwrap.wrap(field.description or "", 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
        item = _list_item(field.annotation)
        if item is not None:  # a list of settings groups (register.gate's rules): their keys too
            lines += key_lines(item, f"{section}.{name}[]")
    return lines


def _as_written(value: object) -> object:
    """A default as a user would write it in YAML: a settings group by the keys it sets."""
    return value.model_dump(mode="json", exclude_defaults=True) if isinstance(value, BaseModel) else str(value)


def _list_item(annotation: object) -> type[BaseModel] | None:
    """The settings model of a `tuple[Model, ...]` field, else None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is not tuple or len(args) != 2 or args[1] is not Ellipsis:
        return None
    return args[0] if isinstance(args[0], type) and issubclass(args[0], BaseModel) else None


def type_name(annotation: object) -> str:
    """A config field's type as a user writes it in YAML."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else type_name(arg) for arg in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        return f"[{', '.join(type_name(arg) for arg in args)}]"
    if origin is dict:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "{" + ", ".join(annotation.model_fields) + "}"
    return {"str": "text", "int": "integer", "float": "number", "bool": "true/false"}.get(
        getattr(annotation, "__name__", ""), str(annotation)
    )
