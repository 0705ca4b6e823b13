"""`python -m artlora.io.mlflow_server ARGS...` runs MLflow's own `mlflow server ARGS...` (services.start_mlflow
starts it so), and ends it as soon as its web worker has ended.

MLflow's server command imports its whole web app (to create the admin user) and then only waits for the uvicorn
worker it started. Once that worker had exited, Python's finalization of those modules took 1.4-2.5 s of CPU more
(strace shows no system call in that time), which every `artlora services down` and every test session's MLflow
server paid. The exit handlers (atexit: MLflow's and logging's) still run; only the finalization, which frees
memory that the exit frees anyway, is skipped."""

from __future__ import annotations

import atexit
import os
import sys


def main() -> None:
    from mlflow.cli import cli

    try:
        cli.main(args=["server", *sys.argv[1:]], prog_name="mlflow")
        code: object = 0
    except SystemExit as exit:
        code = exit.code
    if not isinstance(code, int):  # sys.exit("message") or sys.exit(None), as Python itself treats them
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
