"""The demo's style evidence in several seeds: does the LoRA paint every style, whatever the sample art and noise?

    python bench/style_evidence.py --seeds 0 1 2 --out bench/results/style-evidence-cpu.json

For each seed: `artlora demo --set seed=N` (other sample art, other training and painting noise) in a work folder
of its own (its own local services), timed; then, from the evaluation's metrics.json beside the adapter, per style:
style movement (the LoRA's style distance to the style's held-out images over the base's; issue 23 asks at most
0.7), whether the LoRA's images of the style are closest to it (the confusion matrix's diagonal; at least 4 of 5),
and the held-out loss of base and LoRA (the LoRA's below the base's for every style). Not a test: it prints a
table per seed and writes the figures. `--set` adds settings to every seed's run; `--keep DIR` keeps each seed's
report and style sheet there. Each seed's local services are stopped after its run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STYLES = ("geometric", "op_art", "pointillist", "watercolour", "woodcut")


def run_seed(seed: int, work: Path, extra: list[str], keep: Path | None) -> dict:
    """One demo in `work`; its evaluation's metrics and wall time."""
    os.environ["ARTLORA_WORK_DIR"] = str(work)
    from artlora import contracts
    from artlora.cli import main
    from artlora.io import local_services, storage

    said = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(said):
        code = main(["demo", "--set", f"seed={seed}", *[arg for item in extra for arg in ("--set", item)]])
    seconds = time.monotonic() - started
    print(said.getvalue(), file=sys.stderr)
    if code != 0:
        raise SystemExit(f"the demo of seed {seed} failed (exit {code})")
    adapter = re.search(r"^adapter\s+: (\S+)", said.getvalue(), re.M).group(1)
    local_services.ensure()
    metrics = storage.get_storage().get_json(
        storage.join(contracts.evaluation_folder(adapter), contracts.EVALUATION_METRICS)
    )
    for name in ("evaluation report", "style sheet"):  # the local copies the demo kept
        found = re.search(rf"^{name}\s*: (\S+)", said.getvalue(), re.M)
        if keep and found:
            shutil.copy(found.group(1), keep / f"seed-{seed}-{Path(found.group(1)).name}")
    with contextlib.redirect_stdout(io.StringIO()):
        main(["services", "down"])
    return {"seed": seed, "seconds": round(seconds, 1), "metrics": metrics}


def table(result: dict) -> str:
    m = result["metrics"]
    lines = [
        f"seed {result['seed']} ({result['seconds']:.0f} s): held-out loss {m['val_loss_base']:.4f} (base) -> "
        f"{m['val_loss_lora']:.4f} (LoRA); closest to their own: base {m['style_hits_base']:.0f}, "
        f"LoRA {m['style_hits_lora']:.0f} of {len(STYLES)}; content_change {m.get('content_change', float('nan')):.4f}",
        "| style | movement (LoRA / base) | other content (LoRA / base) | held-out loss base | LoRA |",
        "|---|---|---|---|---|",
    ]
    for style in STYLES:
        lines.append(
            f"| {style} | {m[f'style_movement/{style}']:.3f} | {m[f'other_content_movement/{style}']:.3f} | "
            f"{m[f'val_loss_base/{style}']:.4f} | {m[f'val_loss_lora/{style}']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], help="a config setting for every seed's run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep", type=Path, help="a folder for each seed's report and style sheet")
    args = parser.parse_args()
    if len(args.seeds) == 1:  # one seed: here
        with tempfile.TemporaryDirectory(prefix="artlora-style-evidence-") as tmp:
            result = run_seed(args.seeds[0], Path(tmp), args.set, args.keep)
        print(table(result), flush=True)
        args.out.write_text(json.dumps({"settings": args.set, "runs": [result]}, indent=1) + "\n")
        return
    # Several: each in a process of its own, so that no seed's services or settings reach the next.
    runs = []
    for seed in args.seeds:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            again = [sys.executable, __file__, "--seeds", str(seed), "--out", out.name]
            again += [arg for item in args.set for arg in ("--set", item)]
            subprocess.run([*again, *(["--keep", str(args.keep)] if args.keep else [])], check=True)
            runs += json.loads(Path(out.name).read_text())["runs"]
        args.out.write_text(json.dumps({"settings": args.set, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
