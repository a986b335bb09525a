"""The console: a browser UI served by the gateway on its own port.

It is static files (``api_gateway/console/``: one HTML page, ES modules, a stylesheet
and the vendored Preact and htm) that talk to the gateway's REST API with the user's
token, so it shows exactly what the API allows that user. Every page of the console
answers with the same HTML; the browser routes by path, so each page has a URL that
reloads and can be shared.

The page's Content-Security-Policy allows scripts and styles from this origin only,
plus the one inline import map, pinned by its hash; no other origin is ever contacted.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from aiohttp import web

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
STATIC_PREFIX = "/console"
# The browser-side routes (js/main.js): each answers with the console's page.
PAGES = (
    "/",
    "/signin",
    "/signup",
    "/jobs",
    "/jobs/new",
    "/jobs/{jobId}",
    "/jobs/{jobId}/edit",
    "/jobs/{jobId}/runs/{runId}",
    "/admin/users",
)
_IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.S)


def content_security_policy(page: str) -> str:
    """Scripts and styles from this origin only (and the page's own import map, by hash)."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
        for m in _IMPORT_MAP.findall(page)
    )
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' {hashes}".strip(),
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }


def add_console(app: web.Application) -> None:
    """Serve the console's page at each of its routes and its files under /console/."""
    page = (CONSOLE_DIR / "index.html").read_text()
    headers = security_headers(content_security_policy(page))

    async def console_page(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=headers)

    async def console_file(request: web.Request) -> web.StreamResponse:
        # Only regular files inside the console's directory (no "..", no symlink out of it).
        path = (CONSOLE_DIR / request.match_info["path"]).resolve()
        if not path.is_relative_to(CONSOLE_DIR) or not path.is_file():
            raise web.HTTPNotFound()
        # Small files that change with the project: the browser revalidates them (ETag) on each load.
        return web.FileResponse(path, headers={**headers, "Cache-Control": "no-cache"})

    for route in PAGES:
        app.router.add_get(route, console_page)
    app.router.add_get(STATIC_PREFIX + "/{path:.+}", console_file)
