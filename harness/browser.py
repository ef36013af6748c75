"""Headless Chromium from Debian's package, driven by Playwright, for the tests of our pages.

Every request a page makes is recorded (to assert that nothing leaves the service's origin), and
JavaScript errors and Content-Security-Policy violations are collected. Screenshots go to
build/screenshots/ (not committed) for a reviewer to look at. Playwright never downloads a browser
here: it launches /usr/bin/chromium (`make test` installs the package).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = PROJECT_ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox (tests may run as root); no background traffic of Chromium's own (updates, sync, Google's
# hosts), which a closed network refuses and which is not the page's doing.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-default-apps"]
LAPTOP_SCREEN = {"width": 1366, "height": 900}
PATIENCE_MS = 30_000
"""How long an action or an expectation waits (Playwright's default: 5 s). Chromium shares two cores with
the server, its workers and a training job here: 5 s is a guess about the machine, not about the page.
A wait that ends early does not slow a test; only a failing check waits it out."""


@contextmanager
def chromium() -> Iterator[Browser]:
    expect.set_options(timeout=PATIENCE_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class RecordedPage:
    """A page (its own browser context: fresh storage) with what it requested and what went wrong."""

    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, browser: Browser, origin: str) -> RecordedPage:
        context = browser.new_context(viewport=LAPTOP_SCREEN)
        context.set_default_timeout(PATIENCE_MS)
        recorded = cls(context.new_page(), origin)
        context.on("request", lambda request: recorded.requests.append(request.url))
        recorded.page.on("pageerror", lambda error: recorded.errors.append(f"uncaught: {error}"))
        recorded.page.on("console", lambda message: recorded.errors.append(f"console: {message.text}")
                         if "Content Security Policy" in message.text or message.type == "assert" else None)
        return recorded

    def off_origin(self) -> list[str]:
        """Requests to anywhere but the service (data: URLs are the page's own bytes)."""
        own = (self.origin + "/", "data:", "blob:")
        return [url for url in self.requests if url != self.origin and not url.startswith(own)]

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path

    def close(self) -> None:
        self.page.context.close()
