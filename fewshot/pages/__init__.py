"""What a browser opens: the API docs at `/` (and `/docs`) and the console at `/console`.

Both are plain HTML here (`docs.html`, `console.html`) with their CSS and JavaScript in `assets/`,
served at /assets/ (no build step, no framework, nothing fetched from another origin: no CDN, web
font, image or tracker). The docs page is Swagger UI from the assets BentoML already serves under
/static_content; the console calls only the public /v1 routes, with the API key the user typed
(kept in the tab's sessionStorage).

The API's description is written once, in `description.md`: the OpenAPI document's `info` (which
the docs page shows) and the bento's description (bentofile.yaml) both read it.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fewshot import __version__

SERVICE_NAME = "fewshot"
HERE = Path(__file__).parent
ASSETS = HERE / "assets"
DESCRIPTION_FILE = HERE / "description.md"
# /docs too: where the seed's users open the interactive docs ("http://localhost:8000/docs").
PAGE_PATHS = frozenset({"/", "/docs", "/docs/", "/console", "/console/"})
ASSET_PREFIX = "/assets/"

# Our pages load only our own origin's files; a browser enforces it, so a page edited later cannot
# start calling out unnoticed. Swagger UI sets inline styles (hence 'unsafe-inline' for styles on
# the docs page only) and shows data: images.
DOCS_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
CONSOLE_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@cache
def description() -> str:
    return DESCRIPTION_FILE.read_text(encoding="utf-8").strip()


def openapi_info() -> dict[str, Any]:
    """The OpenAPI document's `info`: ours, in place of BentoML's name:dev, version "None",
    boilerplate, badges and contact."""
    return {"title": SERVICE_NAME, "version": __version__, "description": description(),
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}}


def page_title(page: str) -> str:
    return f"{SERVICE_NAME} {__version__} · {page}"


@cache
def _page(file: str, title: str) -> str:
    return (HERE / file).read_text(encoding="utf-8").replace("{{title}}", html.escape(title))


def _html(file: str, title: str, policy: str) -> HTMLResponse:
    return HTMLResponse(_page(file, title), headers={"content-security-policy": policy, "cache-control": "no-cache"})


async def docs_page(_: Any) -> HTMLResponse:
    return _html("docs.html", page_title("API"), DOCS_POLICY)


async def console_page(_: Any) -> HTMLResponse:
    return _html("console.html", page_title("console"), CONSOLE_POLICY)


async def to_console(_: Any) -> RedirectResponse:
    return RedirectResponse("../console")  # relative: the page's own links resolve against /console


async def to_docs(_: Any) -> RedirectResponse:
    return RedirectResponse("../docs")  # as to_console: its relative links resolve against /docs


def pages_app() -> Starlette:
    """`/` and `/docs` (the docs), `/console`, and their files under `/assets/`."""
    return Starlette(routes=[
        Route("/", docs_page, methods=["GET", "HEAD"]),
        Route("/docs", docs_page, methods=["GET", "HEAD"]),
        Route("/docs/", to_docs, methods=["GET", "HEAD"]),
        Route("/console", console_page, methods=["GET", "HEAD"]),
        Route("/console/", to_console, methods=["GET", "HEAD"]),
        Mount("/assets", StaticFiles(directory=ASSETS), name="assets"),
    ])


def is_page_path(path: str) -> bool:
    return path in PAGE_PATHS or path.startswith(ASSET_PREFIX)
