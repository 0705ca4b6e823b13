"""A throw-away PostgreSQL cluster on loopback that wants passwords (scram-sha-256), as a production one does.

One cluster serves the whole test session (conftest's `postgres` fixture); each user of it makes its own
database, with its own role where the role's name matters (the k8s manifests' `mlflow`)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from session_processes import LEFTOVER

from artlora.io.services import free_port_block

SUPERUSER, SUPERUSER_PASSWORD = "artlora", "artlora-tests"


@dataclass(frozen=True)
class PostgresCluster:
    root: Path
    bin_dir: Path
    port: int

    def create_database(self, name: str, user: str = SUPERUSER, password: str = SUPERUSER_PASSWORD) -> str:
        """A new database owned by `user` (created with `password` if new); its URL, with the password in it."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user]).fetchone()
            if not exists:
                role = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password))
                connection.execute(role)
            database = sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(user))
            connection.execute(database)
        return self.url(name, user, password)

    def url(self, database: str, user: str = SUPERUSER, password: str = SUPERUSER_PASSWORD) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        _as_owner(f"{self.bin_dir}/pg_ctl", "-D", f"{self.root}/data", "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PostgresCluster:
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert binaries, "PostgreSQL server binaries not found: apt-get install postgresql (see .ci/run)"
    bin_dir = Path(binaries[-1]).parent
    # initdb refuses to run as root, so the cluster belongs to the postgres user then; it lives outside pytest's
    # temporary folders, which only their owner may enter.
    root = Path(tempfile.mkdtemp(prefix="artlora-pg-"))
    (root / "password").write_text(SUPERUSER_PASSWORD)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "password", "postgres")
    port = free_port_block(1)
    auth = ["--auth=scram-sha-256", f"--pwfile={root}/password"]
    _as_owner(f"{bin_dir}/initdb", "-D", f"{root}/data", "-U", SUPERUSER, *auth)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    start = [f"{bin_dir}/pg_ctl", "-D", f"{root}/data", "-o", options, "-l", f"{root}/log", "-w", "start"]
    # The server carries its folder in its environment: whoever ends it after a killed session deletes that too.
    _as_owner(*start, environment={**os.environ, LEFTOVER: str(root)})
    return PostgresCluster(root, bin_dir, port)


def _as_owner(*command: str, environment: dict[str, str] | None = None) -> None:
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_owner, *command], check=True, capture_output=True, env=environment)
