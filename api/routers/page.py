"""The search page (``/ui/``): three static files, served by the API itself under a CSP that lets
the page load only them and call only this API. It holds nothing secret: the key a user pastes
stays in the browser's session and goes with each call, which checks it."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

STATIC = Path(__file__).resolve().parents[1] / "static"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_FILES = {"": ("search.html", "text/html; charset=utf-8"), "search.js": ("search.js", "text/javascript; charset=utf-8"),
          "search.css": ("search.css", "text/css; charset=utf-8")}

router = APIRouter(tags=["ui"], include_in_schema=False)


def _file(name: str) -> Response:
    filename, media_type = _FILES[name]
    return Response(
        (STATIC / filename).read_bytes(), media_type=media_type,
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
    )


@router.get("/ui")
async def page_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/ui/")
async def page() -> Response:
    return _file("")


@router.get("/ui/search.js")
async def script() -> Response:
    return _file("search.js")


@router.get("/ui/search.css")
async def stylesheet() -> Response:
    return _file("search.css")
