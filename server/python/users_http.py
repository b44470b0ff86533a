"""The HTTP server of users-service in Python: a ``ThreadingHTTPServer`` (one thread per
connection, HTTP/1.1 keep-alive, since the gateway pools connections; Nagle off, so that a head
and a body write are not held back by delayed ACKs) whose handler runs the service's WSGI
application, the same one ``shmbridge.wsgi`` serves over the control channel."""

import io
import socket
import socketserver
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_to_bytes


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    service = None  # the users_service.Service, set on the subclass that `make_server` builds

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_OPTIONS(self):
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        """Runs the service's WSGI application for this request: the smallest WSGI server that
        keeps this server's HTTP/1.1 keep-alive (wsgiref's answers one request a connection).
        No route takes a request body or reads a header, so the environ carries neither."""
        self._discard_request_body()
        path, _, query = self.path.partition("?")
        environ = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        started = []
        body = b"".join(
            self.service.wsgi(environ, lambda status, headers, exc_info=None: started.extend((status, headers)))
        )
        status, headers = started
        self.send_response_only(int(status.split(" ", 1)[0]))
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("date", self.date_time_string())
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _discard_request_body(self) -> None:
        if "transfer-encoding" in self.headers:
            # No route takes a body; rather than parse chunks, read no further requests.
            self.close_connection = True
            return
        length = self.headers.get("content-length")
        if length is None:
            return
        try:
            remaining = int(length)
        except ValueError:
            self.close_connection = True
            return
        if remaining > 1 << 20:
            self.close_connection = True
            return
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    def log_message(self, format, *args):  # noqa: A002  (the base class's signature)
        # Per-request lines would only fill the harness's pipes (it keeps warnings only).
        pass


class Server(ThreadingHTTPServer):
    # The load generator opens 50+ connections at once; the default backlog of 5 refuses some.
    request_queue_size = 128

    def server_bind(self):
        # HTTPServer.server_bind also resolves the host's fully qualified name, a reverse DNS
        # lookup that can stall start-up for seconds; nothing here uses the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class Server6(Server):
    address_family = socket.AF_INET6


def make_server(args, service) -> ThreadingHTTPServer:
    """The HTTP server for ``service`` on ``args.listen``."""
    host, port = args.listen
    handler = type("UsersHandler", (Handler,), {"service": service})
    server_class = Server6 if ":" in host else Server
    return server_class((host, port), handler)
