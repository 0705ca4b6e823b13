"""`artlora generate`: paint with a registered style."""

from __future__ import annotations

import argparse

from artlora.cli.common import command, output_folder, print_result
from artlora.errors import ArtloraError

DESCRIPTION = """Paint images with a registered style. The model version's lineage names its base model; its
adapter is downloaded once into ARTLORA_WORK_DIR/adapters/ and reused. Each PNG records its prompt, seed, model
version and settings in its text chunks (and an AUTOMATIC1111 `parameters` chunk).

examples:
  artlora generate --model models:/demo-style@champion --prompt "a woodcut of a lighthouse" --out images/
  artlora generate --model demo-style/3 --prompt "a harbour at dusk" --count 4 --seed 10 --strength 0.8 --out images/
"""


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = command(commands, "generate", "paint images with a registered style", description=DESCRIPTION)
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS, NAME@ALIAS or NAME/VERSION")
    parser.add_argument("--prompt", required=True, help="what to paint")
    parser.add_argument("--negative", default="", metavar="PROMPT", help="what to keep out of the image")
    parser.add_argument(
        "--strength", type=float, default=1.0, help="adapter weight: 0 is the base model, 1 the style as trained"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image; the next ones count up")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per image (default 25)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--count", type=int, default=1, help="number of images (default 1)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")
    parser.add_argument(
        "--format",
        choices=("diffusers", "kohya"),
        default="diffusers",
        help="which of the version's adapter files to load (the same weights; kohya is what web UIs read)",
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one)")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        default="auto",
        help="auto: bf16 (or fp16) on a GPU, fp32 on the CPU",
    )
    parser.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from artlora.generate import Request, generate
    from artlora.generate.painting import Settings

    if args.count < 1 or args.steps < 1:
        raise ArtloraError("--count and --steps must be at least 1")
    settings = Settings(negative_prompt=args.negative, strength=args.strength, steps=args.steps, guidance=args.guidance)
    request = Request(
        model=args.model,
        prompt=args.prompt,
        out=output_folder(args.out),
        settings=settings,
        seed=args.seed,
        count=args.count,
        layout=args.format,
        device=args.device,
        precision=args.precision,
    )
    print_result({"images": [str(path) for path in generate(request)]})
    return 0
