"""The README's picture of a report: the top of an HTML page as Debian's chromium draws it, as a small PNG.

    PYTHONPATH=src:tests python docs/screenshot.py .artlora/reports/demo-style-v1.html docs/evaluation-report.png

Opens the page with the browser tests' helper (tests/browser.py: it fails on a console or script error and on a
picture that does not load), keeps the top `--height` pixels at 1280 px wide, and stores them in 256 colours.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from browser import chromium_path, look
from PIL import Image
from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, default=1700, help="pixels from the top of the page")
    args = parser.parse_args()
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as tmp:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = look(browser, args.page.resolve().as_uri(), Path(tmp) / "page.png", ready="h1")
        browser.close()
        if page.problems:
            raise SystemExit(f"{args.page}: {page.problems}")
        with Image.open(page.screenshot) as shot:
            top = shot.crop((0, 0, shot.width, min(args.height, shot.height))).convert("RGB")
    top.quantize(256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
