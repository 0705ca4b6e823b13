"""Pages opened in a real browser: Debian's `chromium` package driven by Playwright (Playwright's own browser
download cannot reach its servers here; .ci/run installs chromium when it is missing).

`look` opens one page and reports what a reader would notice: console errors, script errors, pictures that did
not load (an `<img>` whose natural width is 0), and the page's visible text; it keeps a full-page screenshot.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"

# Every picture on the page: those not decoded (broken, missing, or not loaded yet), by alt text or address.
BROKEN_IMAGES = """() => Array.from(document.images)
    .filter(image => !(image.complete && image.naturalWidth > 0))
    .map(image => image.alt || image.currentSrc.slice(0, 120) || image.src.slice(0, 120))"""


def chromium_path() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        raise RuntimeError("no chromium here: apt-get install -y chromium (.ci/run does it when it is missing)")
    return path


@dataclass(frozen=True)
class Looked:
    console_errors: list[str]
    script_errors: list[str]
    broken_images: list[str]
    images: int
    text: str
    screenshot: Path
    failed_requests: list[str]  # "<status> <url>" of every answer of 400 or more (what a console 404 was about)

    @property
    def problems(self) -> list[str]:
        return [
            *(f"console error: {e}" for e in self.console_errors),
            *(f"script error: {e}" for e in self.script_errors),
            *(f"picture not loaded: {e}" for e in self.broken_images),
        ]


def look(
    browser,
    url: str,
    screenshot: Path,
    ready: str | None = None,
    timeout_ms: int = 30_000,
    settle_ms: int = 0,
    login: tuple[str, str] | None = None,
) -> Looked:
    """Open `url` (as the user `login`, a username and password, where the server asks for one); with `ready` (a
    Playwright selector: CSS, or `text=...`), wait until it shows, then until every picture has loaded or failed,
    then `settle_ms` more (for a page that draws after its data arrives)."""
    credentials = {"username": login[0], "password": login[1]} if login else None
    page = browser.new_page(viewport={"width": 1280, "height": 900}, http_credentials=credentials)
    console: list[str] = []
    scripts: list[str] = []
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: scripts.append(str(error)))
    failed: list[str] = []
    page.on("response", lambda answer: failed.append(f"{answer.status} {answer.url}") if answer.status >= 400 else None)
    try:
        page.goto(url, wait_until="load", timeout=timeout_ms)
        if ready is not None:
            page.locator(ready).first.wait_for(state="visible", timeout=timeout_ms)
        # Pictures still loading count as broken after a while; single-page apps poll, so "network idle" never comes.
        page.wait_for_function("() => Array.from(document.images).every(image => image.complete)", timeout=timeout_ms)
        page.wait_for_timeout(settle_ms)
        broken = page.evaluate(BROKEN_IMAGES)
        count = page.evaluate("() => document.images.length")
        page.screenshot(path=str(screenshot), full_page=True)
        text = page.inner_text("body")
    finally:
        page.close()
    return Looked(console, scripts, broken, count, text, screenshot, failed)
