"""`artlora generate`: paint with a registered style."""

from __future__ import annotations

import argparse
from pathlib import Path

from artlora.cli.common import command, output_file, output_folder, print_result
from artlora.errors import ArtloraError

DESCRIPTION = """Paint images with a registered style. The model version's lineage names its base model; its
adapter is downloaded once into ARTLORA_WORK_DIR/adapters/ and reused. Each PNG records its prompt, seed, model
version and settings in its text chunks (and an AUTOMATIC1111 `parameters` chunk).

Several prompts (--prompt repeated, and/or --prompts-file) are painted in turn from one load of the base model
and adapter, --count images each with the seeds --seed, --seed+1, ...; files are named
NAME-vVERSION-PROMPT-SEED.png. --contact-sheet also writes all of them in one grid, each captioned with its
prompt and seed.

examples:
  artlora generate --model models:/demo-style@champion --prompt "a woodcut of a lighthouse" --out images/
  artlora generate --model demo-style/3 --prompt "a harbour at dusk" --count 4 --seed 10 --strength 0.8 --out images/
  artlora generate --model demo-style@champion --prompts-file prompts.txt --prompt "a fox" --width 768 \\
      --height 512 --contact-sheet images/sheet.png --out images/
"""


def add_commands(commands: argparse._SubParsersAction) -> None:
    parser = command(commands, "generate", "paint images with a registered style", description=DESCRIPTION)
    parser.add_argument("--model", required=True, help="models:/NAME@ALIAS, NAME@ALIAS or NAME/VERSION")
    parser.add_argument(
        "--prompt",
        dest="prompts",
        action="append",
        default=[],
        metavar="PROMPT",
        help="what to paint (repeatable: several prompts)",
    )
    parser.add_argument(
        "--prompts-file",
        metavar="FILE",
        help="a text file with one prompt per line (blank lines skipped), painted after any --prompt",
    )
    parser.add_argument("--negative", default="", metavar="PROMPT", help="what to keep out of the image")
    parser.add_argument(
        "--strength", type=float, default=1.0, help="adapter weight: 0 is the base model, 1 the style as trained"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image; the next ones count up")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per image (default 25)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--count", type=int, default=1, help="number of images per prompt (default 1)")
    parser.add_argument(
        "--width", type=int, help="image width in pixels, a multiple of 8 (default: the base model's, e.g. 512)"
    )
    parser.add_argument(
        "--height", type=int, help="image height in pixels, a multiple of 8 (default: the base model's, e.g. 512)"
    )
    parser.add_argument(
        "--contact-sheet",
        metavar="PATH",
        help="also write one PNG with every image in a grid, each with its prompt and seed under it",
    )
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
    from artlora.generate.run import Request, generate
    from artlora.generate.settings import Settings, check_size

    if args.count < 1 or args.steps < 1:
        raise ArtloraError("--count and --steps must be at least 1")
    check_size("--width", args.width)  # before the minute the model takes to load
    check_size("--height", args.height)
    prompts = [*args.prompts, *read_prompts(args.prompts_file)]
    if not prompts:
        raise ArtloraError("nothing to paint (give --prompt, or --prompts-file with one prompt per line)")
    settings = Settings(negative_prompt=args.negative, strength=args.strength, steps=args.steps, guidance=args.guidance)
    request = Request(
        model=args.model,
        prompts=tuple(prompts),
        out=output_folder(args.out),
        settings=settings,
        seed=args.seed,
        count=args.count,
        layout=args.format,
        device=args.device,
        precision=args.precision,
        width=args.width,
        height=args.height,
        contact_sheet=output_file(args.contact_sheet) if args.contact_sheet else None,
    )
    written = [str(path) for path in generate(request)]
    if args.contact_sheet:
        print_result({"images": written[:-1], "contact_sheet": written[-1]})
    else:
        print_result({"images": written})
    return 0


def read_prompts(path: str | None) -> list[str]:
    """The prompts of a --prompts-file: one per line, surrounding spaces and blank lines dropped."""
    if path is None:
        return []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as err:
        raise ArtloraError(f"--prompts-file {path}: cannot read it as text ({err}; give a UTF-8 text file)") from err
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ArtloraError(f"--prompts-file {path}: no prompts in it (write one prompt per line)")
    return prompts
