"""Security headers on every answer of the server's HTTPS listener (docs/api.md, "Security
headers"): a strict Content-Security-Policy for the console's page and files, no sniffing,
no referrer, no framing, and no caching of sign-in answers."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The console is plain ES modules and stylesheets from /static; styles set from scripts go
# through the CSSOM (element.style), which CSP does not restrict, so no 'unsafe-inline'.
CONSOLE_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    )
)
EVERY_ANSWER = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
# Answers that carry who the caller is: never kept by a browser or a proxy cache.
NOT_STORED = ("/api/v1/login", "/api/v1/logout", "/api/v1/whoami")


def is_console_path(path: str) -> bool:
    return path in ("/", "/ui") or path.startswith("/static/")


class SecurityHeaders:
    """Pure ASGI middleware (streams such as ``/events`` pass through unbuffered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in EVERY_ANSWER.items():
                    headers[name] = value
                if is_console_path(path):
                    headers["content-security-policy"] = CONSOLE_POLICY
                if path in NOT_STORED:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
