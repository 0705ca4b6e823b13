"""What every command's parser shares: `-v` in any position, the config options, help layout, result output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from artlora.errors import ArtloraError

# `-v` is accepted after the command too (`artlora train -v ...`); SUPPRESS keeps the top-level default then.
_VERBOSE = argparse.ArgumentParser(add_help=False)
_VERBOSE.add_argument(
    "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging, and tracebacks with errors"
)


def command(
    commands: argparse._SubParsersAction, name: str, help: str, group: str = "", **options
) -> argparse.ArgumentParser:
    """A command (or, with `group`, a group's action such as `pipeline run`); its errors read
    `artlora <group> <name>: error: ...`. The description defaults to the help line."""
    options.setdefault("description", help[0].upper() + help[1:] + ".")
    parser = commands.add_parser(
        name, help=help, parents=[_VERBOSE], formatter_class=argparse.RawDescriptionHelpFormatter, **options
    )
    parser.set_defaults(command_name=f"{group} {name}".strip())
    return parser


def group(commands: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with actions of its own (`artlora pipeline <action>`)."""
    parser = command(commands, name, help)
    return parser.add_subparsers(dest="action", required=True, metavar="<action>")


def config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--config",
        required=required,
        metavar="FILE",
        help="YAML config file (see configs/; `artlora <stage> --help` lists every key)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.max_steps=200 (repeatable; values are YAML)",
    )


def output_folder(path: str | Path) -> Path:
    """A local folder the command writes into (`--out`), created with its parents; an error naming it when a file
    stands in the way."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        where = f"--out {path}: a file stands where a folder must be ({err.filename}; choose a folder)"
        raise ArtloraError(where) from err
    return folder


def output_file(path: str | Path) -> Path:
    """A local file the command writes (`--out`); an error naming it when its folder does not exist."""
    file = Path(path)
    if not file.parent.is_dir():
        raise ArtloraError(f"--out {path}: the folder {file.parent} does not exist (create it, or choose another)")
    return file


def print_result(result: object) -> None:
    """A stage's or pipeline's result as JSON on stdout, for scripts (logs go to stderr)."""
    if os.environ.get("RANK", "0") != "0":  # `accelerate launch`: every process has the result; one prints it
        return
    data = dataclasses.asdict(result) if dataclasses.is_dataclass(result) and not isinstance(result, type) else result
    print(json.dumps(data, indent=2, default=str))


def cluster_arguments(parser: argparse.ArgumentParser, local: str = "") -> None:
    """Where the Kubeflow Pipelines API is and who we are there; with `local` (its help), `--local` is the
    alternative to `--host`, and one of them is required."""
    where: argparse._ActionsContainer = parser
    if local:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--local", action="store_true", help=local)
    where.add_argument(
        "--host",
        required=not local,
        metavar="URL",
        help="the KFP API or UI address, e.g. http://localhost:8080 (after `kubectl -n kubeflow port-forward "
        "svc/ml-pipeline-ui 8080:80`) or http://ml-pipeline.kubeflow.svc.cluster.local:8888 in the cluster",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="a service-account token for KFP, re-read on every request (in a pod: a projected token with "
        "audience pipelines.kubeflow.org); without it, $ARTLORA_KFP_TOKEN if set, else no token",
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help="multi-user KFP: the profile namespace to run in (default: $ARTLORA_KFP_NAMESPACE; standalone KFP "
        "has none)",
    )


def experiment_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment", metavar="NAME", help="KFP experiment to file the run under (default: the config's experiment)"
    )


def connection(args: argparse.Namespace):
    """The KFP connection the cluster options describe (an artlora.pipelines.client.Connection)."""
    from artlora.io import settings
    from artlora.pipelines.client import Connection

    namespace = args.namespace or settings.kfp_namespace()
    return Connection(args.host, namespace, settings.kfp_token(), args.token_file)
