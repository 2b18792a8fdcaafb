#!/usr/bin/env python3
"""A stand-in for a Kubernetes ingress node in edgekit's Vagrant lab.

Answers every GET with the node's name on the ingress NodePorts (HTTP and
HTTPS) and with "ok" on an API-server-like HTTPS /healthz, so a client of
the VIP can see which node served it. Standard library only: the lab VMs
may have no package mirror.
"""

from __future__ import annotations

import argparse
import http.server
import ssl
import sys
import threading
import urllib.request

HTTP_PORT = 30080
HTTPS_PORT = 30443
API_PORT = 6443


def make_handler(name: str, api: bool) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.0 closes each connection: haproxy's checks and the failover
        # probes must each see a fresh answer, not a kept-alive socket.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if api and self.path != "/healthz":
                self._reply(404, "not found\n")
            elif api:
                self._reply(200, "ok\n")
            else:
                self._reply(200, f"{name}\n")

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def _reply(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Edgekit-Node", name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            # Health checks every second would flood the journal.
            return

    return Handler


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, tls: ssl.SSLContext | None):
        super().__init__(address, handler)
        self.tls = tls

    def finish_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        # The TLS handshake runs here, in the connection's own thread, so one
        # slow client cannot stall the accept loop for everyone else.
        request.settimeout(10)
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


def serve(bind: str, port: int, handler: type, tls: ssl.SSLContext | None) -> threading.Thread:
    server = Server((bind, port), handler, tls)
    thread = threading.Thread(target=server.serve_forever, name=f"port-{port}", daemon=True)
    thread.start()
    return thread


def probe(host: str, ports: tuple[int, int, int]) -> bool:
    """True when all three listeners answer; used by node.sh after a (re)start."""
    insecure = ssl.create_default_context()
    # The certificate is the node's own self-signed one: this checks liveness, not trust.
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    http_port, https_port, api_port = ports
    urls = (
        f"http://{host}:{http_port}/",
        f"https://{host}:{https_port}/",
        f"https://{host}:{api_port}/healthz",
    )
    try:
        for url in urls:
            with urllib.request.urlopen(url, timeout=2, context=insecure) as resp:
                if resp.status != 200:
                    return False
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", help="the name every answer carries")
    parser.add_argument("--cert", help="TLS certificate (PEM)")
    parser.add_argument("--key", help="TLS private key (PEM)")
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--http-port", type=int, default=HTTP_PORT)
    parser.add_argument("--https-port", type=int, default=HTTPS_PORT)
    parser.add_argument("--api-port", type=int, default=API_PORT)
    parser.add_argument("--probe", metavar="HOST", help="check a running server and exit")
    args = parser.parse_args(argv)
    ports = (args.http_port, args.https_port, args.api_port)

    if args.probe:
        return 0 if probe(args.probe, ports) else 1
    if not (args.name and args.cert and args.key):
        parser.error("--name, --cert and --key are required to serve")

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    threads = [
        serve(args.bind, args.http_port, make_handler(args.name, api=False), None),
        serve(args.bind, args.https_port, make_handler(args.name, api=False), tls),
        serve(args.bind, args.api_port, make_handler(args.name, api=True), tls),
    ]
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
