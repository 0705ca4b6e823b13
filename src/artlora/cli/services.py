"""`artlora services up | down | status | add-user`: the local object store and MLflow server, kept running between
runs; `artlora services seaweedfs-secret`: the same store security for the Kubernetes store."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from artlora.cli.common import command, group

SEAWEEDFS_SECRET = "artlora-seaweedfs-security"  # the Secret k8s/base/services/seaweedfs.yaml mounts

if TYPE_CHECKING:  # the io modules are imported when a command runs, so that `--help` stays quick
    from artlora.io.local_services import Status

UP_HELP = """Start SeaweedFS (an S3 endpoint) and an MLflow server on this machine's loopback, as background
processes that outlive this command, and wait until both answer. Running ones are left as they are, so `up`
twice is harmless. Data, logs, pid files and the generated S3 keys live in ARTLORA_WORK_DIR/services/ (default
./.artlora/services/), only readable by you; they survive `down` and `up`.

stdout gets the `export` lines your shell and other tools need (artlora, `mlflow` and boto3 clients), so
    eval "$(artlora services up)"
points this shell at the services; the rest (URLs, pids) goes to stderr.

Both demand credentials: the S3 keys, and MLflow's admin login (MLFLOW_TRACKING_USERNAME/PASSWORD, also in
credentials.env; `artlora services add-user` adds others).

ports: S3 on 8333 (SeaweedFS's master, volume server and filer take 8334-8336, and their gRPC twins
18333-18336), MLflow on 5000. Move them with --s3-port/--mlflow-port or ARTLORA_S3_PORT/ARTLORA_MLFLOW_PORT.
`artlora demo` and `artlora pipeline run --local` start the same services when ARTLORA_S3_ENDPOINT is unset."""

STATUS_HELP = """Say whether each service runs, where, since when, and where its data and log are. A pid file whose
process is gone (a crash, a reboot) shows as dead; `artlora services up` starts it again. Exit code 0 when both
run and answer, 1 otherwise."""


USER_HELP = """Add a user to the running local MLflow server with a generated password, printed once to stdout as the
two variables MLflow's client (and artlora) log in with. Without --read-only the user is an admin (may change
runs, models, aliases and users, as artlora's own login in ARTLORA_WORK_DIR/services/credentials.env); with it,
the user may read everything and change nothing (enough for `artlora models list`, `generate`, the UI)."""

SECRET_HELP = """Write what the Kubernetes store (k8s/base/services/seaweedfs.yaml) locks itself with, as `artlora
services up` does for the local one: security.toml (JWT keys that the filer and the volume server demand for every
read and write; the gRPC ports' mutual TLS) and the certificates it names (ca.crt, node.crt, node.key), naming
them by the path the Deployment mounts them at, /etc/seaweedfs. FOLDER is made private (0700, files 0600); files
already there are kept, so a second run changes nothing.

For an overlay, write them into its seaweedfs-security/ folder (git ignores it), which its secretGenerator reads:
    artlora services seaweedfs-secret k8s/overlays/gpu/seaweedfs-security
Or make the Secret yourself with the kubectl line printed on stdout."""


def add_commands(commands: argparse._SubParsersAction) -> None:
    actions = group(commands, "services", "run the local S3 store and MLflow server in the background")
    up = command(
        actions, "up", "start both (if not running) and print their export lines", "services", description=UP_HELP
    )
    up.add_argument("--s3-port", type=int, metavar="PORT", help="SeaweedFS's S3 port (default 8333)")
    up.add_argument("--mlflow-port", type=int, metavar="PORT", help="the MLflow server's port (default 5000)")
    up.add_argument(
        "--backend-store-uri",
        metavar="URI",
        help="MLflow's database, e.g. postgresql://USER@HOST:5432/DB with the password in PGPASSWORD "
        "(default: SQLite in ARTLORA_WORK_DIR/services/mlflow.db)",
    )
    up.set_defaults(handler=services_up)
    down = command(actions, "down", "stop both cleanly (their data stays for the next `up`)", "services")
    down.set_defaults(handler=services_down)
    status = command(actions, "status", "what runs, where, since when", "services", description=STATUS_HELP)
    status.set_defaults(handler=services_status)
    add_user = command(actions, "add-user", "add a user to the local MLflow server", "services", description=USER_HELP)
    add_user.add_argument("name", help="the new user's name")
    add_user.add_argument("--read-only", action="store_true", help="may read runs and models, change nothing")
    add_user.set_defaults(handler=services_add_user)
    secret = command(
        actions,
        "seaweedfs-secret",
        "write SeaweedFS's security.toml and certificates for the Kubernetes Secret",
        "services",
        description=SECRET_HELP,
    )
    secret.add_argument("folder", metavar="FOLDER", help="where to write them (made if missing)")
    secret.set_defaults(handler=services_seaweedfs_secret)


def services_up(args: argparse.Namespace) -> int:
    from artlora.io import local_services

    started = local_services.up(args.s3_port, args.mlflow_port, args.backend_store_uri)
    for line in status_lines(local_services.status(), started):
        print(line, file=sys.stderr)
    print(ui_lines(), file=sys.stderr)
    print('# for this shell: eval "$(artlora services up)"; stop them with `artlora services down`', file=sys.stderr)
    for key, value in local_services.exports().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def services_add_user(args: argparse.Namespace) -> int:
    from artlora.io import local_services

    login = local_services.add_user(args.name, args.read_only)
    kind = "read-only user" if args.read_only else "admin"
    print(f"# MLflow {kind} {login.username!r} added; the password is shown only now", file=sys.stderr)
    for key, value in login.environment().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def services_seaweedfs_secret(args: argparse.Namespace) -> int:
    from artlora.errors import ArtloraError
    from artlora.io import service_security

    folder = Path(args.folder)
    try:
        service_security.seaweedfs_config(folder, read_at=service_security.CLUSTER_CONFIG_DIR)
    except OSError as error:
        raise ArtloraError(f"cannot write into {folder}: {error.strerror} (choose a folder you may write)") from None
    missing = [name for name in service_security.SEAWEEDFS_FILES if not (folder / name).is_file()]
    if missing:
        raise ArtloraError(f"{folder} has a security.toml but not {', '.join(missing)} (remove the folder, rerun)")
    mounted = service_security.CLUSTER_CONFIG_DIR
    if f'"{mounted / "ca.crt"}"' not in (folder / service_security.SECURITY_TOML).read_text():
        raise ArtloraError(
            f"{folder}/security.toml names its certificates elsewhere than {mounted} (choose another folder)"
        )
    note = "stdout: the kubectl line that makes the Secret from them, where no overlay's secretGenerator does"
    print(f"# SeaweedFS's security.toml and certificates are in {folder}; {note}", file=sys.stderr)
    files = " ".join(f"--from-file={shlex.quote(str(folder / name))}" for name in service_security.SEAWEEDFS_FILES)
    print(f"kubectl -n artlora create secret generic {SEAWEEDFS_SECRET} {files}")
    return 0


def services_down(args: argparse.Namespace) -> int:
    from artlora.io import local_services

    stopped = local_services.down()
    print(f"stopped {' and '.join(stopped)}" if stopped else "nothing was running")
    print(f"the data stays in {local_services.folder()}; `artlora services up` starts them again")
    return 0


def services_status(args: argparse.Namespace) -> int:
    from artlora.io import local_services

    statuses = local_services.status()
    for line in status_lines(statuses):
        print(line)
    if all(status.state == "running" for status in statuses):
        print(ui_lines())
        return 0
    return 1


def status_lines(statuses: list[Status], started: list[str] | None = None) -> list[str]:
    """Two lines per service: its state, URL, pid and age (and, from `up`, whether it started now); data and log."""
    from artlora.io.local_services import since

    lines = []
    for status in statuses:
        record = status.record
        if record is None:
            lines.append(f"{status.name:<10} stopped")
            continue
        note = ""
        if status.leftovers:
            left = ", ".join(map(str, status.leftovers))
            note = f"  pid {record.pid} is gone, its processes {left} still run (`artlora services up` ends them)"
        elif status.state.startswith("dead"):
            note = f"  pid {record.pid} is gone (`artlora services up` starts it again)"
        elif started is not None:
            note = "  (started now)" if status.name in started else "  (already running)"
        lines.append(
            f"{status.name:<10} {status.state:<8} {record.url}  pid {record.pid}  since {since(record)}{note}\n"
            f"{'':<10} data {record.where}  log {record.log}"
        )
    return lines


def ui_lines() -> str:
    from artlora.io import local_services

    urls = local_services.ui_urls()
    path = local_services.folder() / "credentials.env"
    return (
        f"MLflow UI: {urls['mlflow']} (log in as {local_services.mlflow_login().username}, the password is "
        f"MLFLOW_TRACKING_PASSWORD in {path})\nthe store's objects: S3 at {urls['seaweedfs']} with the keys "
        "exported below (its filer UI is off: it would bypass the keys)"
    )
