"""`artlora services`: the local services a laptop run needs."""

from __future__ import annotations

import argparse
import os
import time

from artlora.cli.common import command
from artlora.io import settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = command(commands, "services", "start an embedded S3 endpoint here and keep it up until Ctrl-C")
    serve.set_defaults(handler=serve_s3)


def serve_s3(args: argparse.Namespace) -> int:
    from artlora.io import services

    with services.embedded_s3() as url:
        print("embedded S3 endpoint is up; in another shell:")
        for key in (settings.S3_ENDPOINT, settings.S3_ACCESS_KEY, settings.S3_SECRET_KEY):
            print(f"  export {key}={os.environ[key]}")
        print(f"objects live in memory until you stop this (Ctrl-C); endpoint {url}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
