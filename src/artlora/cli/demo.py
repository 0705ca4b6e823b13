"""`artlora demo | sample-data | tiny-model`: the whole pipeline on generated art, and its two inputs alone."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from artlora.cli.common import command, config_arguments, output_folder
from artlora.cli.pipeline import summary
from artlora.errors import ArtloraError
from artlora.io import storage


def add_commands(commands: argparse._SubParsersAction) -> None:
    demo = command(
        commands,
        "demo",
        "generate sample art and a tiny model, then run the whole pipeline here (CPU, minutes)",
    )
    config_arguments(demo, required=False)
    demo.set_defaults(config="configs/demo.yaml")
    demo.add_argument("--count", type=int, default=500, help="sample images to generate (default 500)")
    demo.add_argument(
        "--random-base",
        action="store_true",
        help="use the random tiny model instead of the pretrained one (plumbing only: nothing learned is visible)",
    )
    demo.set_defaults(handler=run_demo)

    sample = command(commands, "sample-data", "write procedural artworks in 5 styles, with captions (demo, tests)")
    sample.add_argument("--out", required=True, help="local folder or s3:// prefix")
    sample.add_argument("--count", type=int, default=500, help="number of images (default 500)")
    sample.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    sample.add_argument("--seed", type=int, default=0, help="same seed, same images (default 0)")
    sample.add_argument(
        "--styles",
        nargs="+",
        metavar="STYLE",
        help="only these styles, e.g. '--styles woodcut' for a one-style set (default: all five: pointillist "
        "geometric op_art watercolour woodcut)",
    )
    sample.set_defaults(handler=sample_data)

    tiny = command(
        commands,
        "tiny-model",
        "save a tiny Stable Diffusion: random weights built in code (tests of shapes), or --pretrained: one that "
        "has learned to paint simple scenes (the demo's base; shipped, or built once in about 7 minutes on the CPU)",
    )
    tiny.add_argument("--out", required=True, help="local folder or s3:// prefix for the diffusers layout")
    tiny.add_argument(
        "--pretrained",
        action="store_true",
        help="the pretrained tiny base (SD 1.x architecture): the copy shipped with artlora while its recipe is "
        "the current one, else built once into the work folder's cache (ARTLORA_WORK_DIR/cache)",
    )
    tiny.add_argument(
        "--rebuild", action="store_true", help="with --pretrained: build it again from its recipe, even if cached"
    )
    tiny.add_argument("--seed", type=int, default=0, help="weights seed of the random model (default 0)")
    tiny.add_argument(
        "--arch",
        choices=("sd1", "sd2", "sdxl", "sd3", "flux"),  # demo.tiny.BUILDERS (not imported here: it loads torch)
        default="sd1",
        help="architecture: SD 1.x (default), SD 2.x (v-prediction), SDXL (two text encoders), SD 3.5 (MMDiT, "
        "three text encoders) or Flux.1-dev (guidance-distilled transformer)",
    )
    tiny.set_defaults(handler=tiny_model)


def sample_data(args: argparse.Namespace) -> int:
    from artlora.demo import sample_data

    with _local_or_s3(args.out) as folder:
        styles = args.styles or sample_data.STYLES
        paths = sample_data.generate(folder, count=args.count, size=args.size, seed=args.seed, styles=styles)
    print(f"wrote {len(paths)} images with captions to {args.out}")
    return 0


def tiny_model(args: argparse.Namespace) -> int:
    if args.rebuild and not args.pretrained:
        raise ArtloraError("--rebuild rebuilds the pretrained base: give --pretrained too")
    if args.pretrained:
        if args.arch != "sd1":
            raise ArtloraError(f"the pretrained tiny base is SD 1.x only (--arch {args.arch} was given); drop --arch")
        _put(args.out, _pretrained_base(args.rebuild))
        print(f"wrote the pretrained tiny Stable Diffusion to {args.out}")
        return 0
    from artlora.demo import tiny

    with _local_or_s3(args.out) as folder:
        tiny.save_tiny(folder, args.arch, seed=args.seed)
    print(f"wrote the tiny Stable Diffusion ({args.arch}, seed {args.seed}) to {args.out}")
    return 0


def _pretrained_base(rebuild: bool = False) -> Path:
    from artlora.demo import pretrained

    return pretrained.ensure(rebuild=rebuild, progress=lambda line: print(f"  {line}", flush=True))


def _put(out: str, folder: Path) -> None:
    """Copy a model folder to a local folder or an s3:// prefix (its build record included)."""
    if storage.is_s3(out):
        storage.get_storage().upload_dir(folder, out)
    else:
        shutil.copytree(folder, out, dirs_exist_ok=True)


@contextlib.contextmanager
def _local_or_s3(out: str) -> Iterator[Path]:
    """A local folder to write into: `out` itself, or a temporary one uploaded to the s3:// prefix `out`."""
    if not storage.is_s3(out):
        yield output_folder(out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
        storage.get_storage().upload_dir(tmp, out)


def run_demo(args: argparse.Namespace) -> int:
    """Sample data and the tiny model into the object store, then the whole pipeline, locally."""
    from artlora.demo import sample_data, tiny
    from artlora.io import local_services
    from artlora.orchestration.local import run_local

    config = args.pipeline_config
    local_services.ensure()
    with tempfile.TemporaryDirectory() as tmp:
        store = storage.get_storage()
        print(f"writing {args.count} sample artworks to {config.ingest.source}")
        sample_data.generate(Path(tmp) / "raw", count=args.count, seed=config.seed)
        store.upload_dir(Path(tmp) / "raw", config.ingest.source)
        if args.random_base:
            print(f"writing the random tiny Stable Diffusion to {config.base_model}")
            tiny.save_tiny(Path(tmp) / "model", seed=config.seed)
            store.upload_dir(Path(tmp) / "model", config.base_model)
        else:
            print(f"writing the pretrained tiny Stable Diffusion to {config.base_model}")
            _put(config.base_model, _pretrained_base())
        print("running the pipeline: ingest -> augment -> train -> evaluate -> register")
        outputs = run_local(config)
    print()
    print("\n".join(summary(outputs)))
    return 0
