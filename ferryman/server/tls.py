"""TLS for the server's single HTTPS port, and exposing the client certificate to the app.

The port asks every client for a certificate but does not require one
(`CERT_OPTIONAL`): people use bearer tokens without a certificate, proxies
present the certificate the CA issued them. A presented certificate must chain
to the installation CA or the handshake fails; the `/proxy/v1` routes then
refuse any request without one and look its serial up on every call, so a
removed proxy is cut off at once. uvicorn does not put the peer certificate in
the ASGI scope, so `PeerCertH11Protocol` reads it from the TLS connection when
the connection is made and adds it as `scope["extensions"]["tls"]["client_cert_der"]`.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class PeerCertH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        inner = self.app

        async def app_with_peer(scope: Any, receive: Any, send: Any) -> None:
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {"client_cert_der": der}
            scope["extensions"] = extensions
            await inner(scope, receive, send)

        self.app = app_with_peer

    def shutdown(self) -> None:
        # An idle keep-alive connection is dropped without the TLS close handshake: a client
        # that is not reading would otherwise hold the server's shutdown for many seconds.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            super().shutdown()


def server_ssl_options(cert: str, key: str, ca: str) -> dict[str, Any]:
    """uvicorn Config keyword arguments for the HTTPS port."""
    return {
        "ssl_certfile": cert,
        "ssl_keyfile": key,
        "ssl_ca_certs": ca,
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "http": PeerCertH11Protocol,
    }
