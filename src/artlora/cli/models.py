"""`artlora models list | show | download | promote | compare`: the registered styles, looked up in MLflow."""

from __future__ import annotations

import argparse
import json

from artlora.cli.common import command, group, output_folder

HELP = """Look registered styles up in MLflow (MLFLOW_TRACKING_URI, else the local store in ARTLORA_WORK_DIR).
A version is named NAME (its latest version), NAME@ALIAS or NAME/VERSION, with or without models:/ before it.

examples:
  artlora models list
  artlora models show demo-style@champion
  artlora models compare demo-style/1 demo-style/2
  artlora models download demo-style@champion --out loras/ --format kohya
  artlora models promote demo-style/2 --alias champion --reason "sharper strokes in the side-by-side review"
"""


def add_commands(commands: argparse._SubParsersAction) -> None:
    actions = group(commands, "models", "list, show, compare, download and promote registered styles")
    listing = _action(actions, "list", "every registered version: aliases, key metrics, dataset, age", list_models)
    listing.add_argument("name", nargs="?", help="only this model's versions")
    show = _action(actions, "show", "one version's lineage, metrics, gate outcome and reports", show_model)
    show.add_argument("reference", help="NAME, NAME@ALIAS or NAME/VERSION")
    download = _action(actions, "download", "copy a version's adapter file(s) into a folder", download_model)
    download.add_argument("reference", help="NAME, NAME@ALIAS or NAME/VERSION")
    download.add_argument("--out", required=True, metavar="DIR", help="folder to write the adapter file(s) into")
    download.add_argument(
        "--format",
        choices=("diffusers", "kohya"),
        help="diffusers (pytorch_lora_weights.safetensors, for load_lora_weights) or kohya (one file for "
        "AUTOMATIC1111, Forge, ComfyUI); default: both files",
    )
    promote = _action(actions, "promote", "point an alias at a version, recording who and why", promote_model)
    promote.add_argument("reference", help="NAME/VERSION (or NAME@ALIAS) of the version to promote")
    promote.add_argument("--alias", default="champion", help="alias to move (default champion)")
    promote.add_argument("--reason", required=True, help="why: recorded on the version with who and when")
    compare = _action(actions, "compare", "two or more versions' metrics and lineage side by side", compare_models)
    compare.add_argument("references", nargs="+", metavar="reference", help="NAME, NAME@ALIAS or NAME/VERSION")


def _action(actions, name: str, help: str, handler) -> argparse.ArgumentParser:
    parser = command(actions, name, help, group="models", epilog=HELP)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    parser.set_defaults(handler=handler)
    return parser


def _print(args: argparse.Namespace, data: object, lines: list[str]) -> int:
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))
    return 0


def list_models(args: argparse.Namespace) -> int:
    from artlora.registry import views

    rows = views.all_versions(args.name)
    if not rows:
        return _print(args, rows, ["no registered models (the register stage creates them)"])
    metrics = list(dict.fromkeys(name for row in rows for name in row["metrics"]))
    header = ["MODEL", "VERSION", "ALIASES", *metrics, "DATASET", "AGE"]
    table = [
        [
            row["model"],
            row["version"],
            ",".join(row["aliases"]) or "-",
            *[_number(row["metrics"].get(name)) for name in metrics],
            row["dataset_fingerprint"][:12] or "-",
            row["age"],
        ]
        for row in rows
    ]
    return _print(args, rows, _table([header, *table]))


def show_model(args: argparse.Namespace) -> int:
    from artlora.registry import references, views

    info = views.details(references.resolve(args.reference))
    lines = [
        f"{info['model']} version {info['version']} ({info['uri']}), aliases: {', '.join(info['aliases']) or '-'}",
        f"created {info['created']}, run {info['run_id']}, files {info['source']}",
        "lineage:",
        *_pairs(info["lineage"]),
        "metrics:",
        *_pairs({name: _number(value) for name, value in info["metrics"].items()}),
        f"gate: {info['gate']['decision'] or '-'} ({info['gate']['reason'] or 'no gate recorded'})",
        *([f"  compared with {info['gate']['compared_with']}"] if info["gate"]["compared_with"] else []),
        *[f"  {outcome}" for outcome in info["gate"]["rules"]],
        *(["promotions:", *_pairs(info["promoted"])] if info["promoted"] else []),
        "reports:",
        *_pairs({name: uri for name, uri in info["reports"].items() if uri}),
        "",
        *(info["card"].rstrip("\n").splitlines() or ["(no model card: registered before artlora wrote one)"]),
    ]
    return _print(args, info, lines)


def download_model(args: argparse.Namespace) -> int:
    from artlora.registry import files, references

    version = references.resolve(args.reference)
    written = files.download(version, output_folder(args.out), args.format)
    data = {"model": version.name, "version": version.version, "files": [str(path) for path in written]}
    return _print(args, data, [f"{version.uri}: wrote {path}" for path in written])


def promote_model(args: argparse.Namespace) -> int:
    from artlora.registry.promote import promote

    done = promote(args.reference, args.alias, args.reason)
    was = f"was version {done['previous']}" if done["previous"] else "a new alias"
    line = f"{done['model']} version {done['version']} is now {done['alias']} ({was}); recorded by {done['by']}"
    return _print(args, done, [line])


def compare_models(args: argparse.Namespace) -> int:
    from artlora.registry import references, views

    data = views.comparison([references.resolve(reference) for reference in args.references])
    header = ["", *data["versions"]]
    rows = [[name, *(_number(value) for value in values)] for name, values in data["metrics"].items()]
    rows.append(["aliases", *(",".join(aliases) or "-" for aliases in data["aliases"])])
    rows += [[key, *(value or "-" for value in values)] for key, values in data["lineage"].items()]
    return _print(args, data, _table([header, *rows]))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _pairs(values: dict) -> list[str]:
    width = max((len(key) for key in values), default=0)
    return [f"  {key.ljust(width)}  {value}" for key, value in values.items()]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
