"""A minimal HTTP proxy for tests of the CLI's proxy support (HTTP_PROXY / HTTPS_PROXY)."""

from __future__ import annotations

import select
import socket
import socketserver


class ConnectProxy(socketserver.ThreadingTCPServer):
    """A minimal HTTP proxy: CONNECT tunnels and absolute-form plain requests, recorded."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.requests: list[str] = []


class ProxyHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            byte = self.rfile.read(1)
            if not byte:
                return
            head += byte
        first = head.split(b"\r\n", 1)[0].decode()
        self.server.requests.append(first)  # type: ignore[attr-defined]
        method, target, _ = first.split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # absolute-form: pass the request on as it came
            address = target.split("/")[2]
            host, port = address.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            upstream.sendall(head)
        with upstream:
            pipes = {self.connection: upstream, upstream: self.connection}
            while True:
                readable, _, _ = select.select(list(pipes), [], [], 5)
                if not readable:
                    return
                for source in readable:
                    try:
                        data = source.recv(65536)
                    except ConnectionResetError:  # a client that gave up (a refused TLS)
                        return
                    if not data:
                        return
                    pipes[source].sendall(data)
