"""A stand-in for a Kubernetes ingress node in the local lab.

Run with the machine's python3 inside the node's network namespace; stdlib
only, because the machine's python3 may not see the edgekit package:

    python3 backend_server.py --name node1 --cert C --key K

HTTP on 30080 and TLS on 30443 answer any path with the node's name; TLS on
6443 answers GET /healthz with 200 "ok" (like the Kubernetes API server).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(node: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgekit-lab-backend"

        def do_GET(self) -> None:  # noqa: N802 (name fixed by http.server)
            if self.path.startswith("/slow/"):
                self.slow(self.path.removeprefix("/slow/"))
                return
            body = b"ok\n" if self.path.split("?")[0] == "/healthz" else f"{node}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Edgekit-Node", node)
            self.end_headers()
            self.wfile.write(body)

        def slow(self, seconds: str) -> None:
            """GET /slow/SECONDS: a download that lasts that long, 1 KiB every 100 ms
            (Content-Length given: the client tells a complete one from a cut one)."""
            chunks = int(float(seconds) * 10) if seconds.replace(".", "", 1).isdigit() else 0
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(chunks * 1024))
            self.send_header("X-Edgekit-Node", node)
            self.end_headers()
            for _ in range(chunks):
                self.wfile.write(b"x" * 1024)
                self.wfile.flush()
                time.sleep(0.1)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # probes every 50 ms would fill the log with nothing useful

    return Handler


class TLSServer(ThreadingHTTPServer):
    """Handshakes in the request's own thread, so a silent client cannot stall accept()."""

    daemon_threads = True
    context: ssl.SSLContext

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return  # TCP health checks connect and close without a handshake
        super().finish_request(tls, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class PlainServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def serve(name: str, cert: str, key: str, bind: str, ports: tuple[int, int, int]) -> None:
    http_port, tls_port, api_port = ports
    handler = make_handler(name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    servers: list[ThreadingHTTPServer] = [PlainServer((bind, http_port), handler)]
    for port in (tls_port, api_port):
        tls = TLSServer((bind, port), handler)
        tls.context = context
        servers.append(tls)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--ports", default="30080,30443,6443")
    args = parser.parse_args()
    http_port, tls_port, api_port = (int(p) for p in args.ports.split(","))
    serve(args.name, args.cert, args.key, args.bind, (http_port, tls_port, api_port))


if __name__ == "__main__":
    main()
