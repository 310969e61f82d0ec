"""Serving the web console: ``/`` is its page, ``/static/…`` its files, ``/ui`` a redirect."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ferryman.web import STATIC_DIR

# The browser revalidates each file (ETag/Last-Modified), so an upgrade shows at once.
# The security headers (CSP, nosniff, no framing) come from api/security_headers.py.
NO_CACHE = {"Cache-Control": "no-cache"}


class ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(NO_CACHE)
        return response


def add_console_routes(app: FastAPI) -> None:
    """Mount the console on the API's app (the same listener, TLS and cookies)."""

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return Response("the web console is not installed\n", 404, media_type="text/plain")
        return FileResponse(page, headers=NO_CACHE)

    @app.get("/ui", include_in_schema=False)
    def ui() -> RedirectResponse:
        return RedirectResponse("/", status_code=307)

    app.mount("/static", ConsoleFiles(directory=STATIC_DIR, check_dir=False), name="static")
