"""users-service in Python: the seed's architecture rerun with a Python producer.

The Python twin of the Rust users-service (``server/src/users_service/``), kept beside it in
the server crate. Serves the deterministic users dataset (``users_dataset.py`` beside this file,
byte-identical to the Rust users-service for the same ``count``/``seed``) over HTTP and through
shmbridge shared memory, with the Rust service's routes, headers, error bodies and start-up
contract, so the gateway and the chaos harness can run against either:

- ``GET /users?count=N&seed=S``: the JSON array; ``content-type: application/json``,
  ``content-length``, ``x-payload-crc32`` (8 lowercase hex digits), ``x-transport: api``.
  A bad query is a 400 ``{"code":"bad_query","error":...}`` with the Rust service's message.
- ``GET /healthz``: ``{"status":"ok"}``.
- ``GET /readyz``: ``{"ready":true,"segment":{...}}``, or 503 with the reason when the
  segment could not be created (then only REST is served, as in Rust).
- ``GET /shm/segment``: socket, epoch (16 hex digits), layout_version, slot_count, slot_size.
- ``POST /shm/users`` (only with ``--http-signal``): publishes into a slot and answers with the
  handle's text form.
- The control channel (``shmbridge.wsgi``, serving the same WSGI application as HTTP): every
  route above, asked for as an HTTP request in the HTTP-over-shm convention (``METHOD SP
  /target CRLF (name: value CRLF)* CRLF body``), answers with the same status, content type,
  headers and bytes as over HTTP, errors included; the body travels inline, in a slot or
  sealed, as its size says. Bytes that are not such a request fail that request
  (HandlerFailed), as in Rust.

Run: ``python3 server/python/users_service.py --listen 127.0.0.1:0`` (shared memory needs the
``shmbridge`` package: ``pip install ./transport/python``); it prints one line ``listening on
HOST:PORT`` on stdout once it accepts connections. SIGTERM or SIGINT: stop accepting, let
in-flight requests finish for up to ``--shutdown-timeout``, close the producer, exit 0.
"""

# Design notes for maintainers:
# - One module per part, each named for the Rust file it mirrors: `users_query.py` (query.rs),
#   `users_bodies.py` (bodies.rs: generated users kept per query, serialized per request or,
#   with `--cache`, once), `users_http.py` (the HTTP server), `users_dataset.py` (dataset.rs);
#   this file holds the routes, the segment and the command line.
# - JSON bodies of errors and of /readyz come from serde_json `json!` maps in Rust, whose keys
#   are sorted (no `preserve_order`), while /shm/segment serializes a struct in field order;
#   the dumps below reproduce each, so the bytes match the Rust service's.
# - The shared-memory part needs the native `shmbridge` package (transport/python). Without it,
#   or when the segment cannot be created, the service serves REST only and says why on
#   /readyz, like the Rust service with an uncreatable segment.
# - The service is one WSGI application (`Service.wsgi`, over one router, `Service.answer`),
#   served over HTTP by `Handler` and over the control channel by `shmbridge.wsgi`, so a route
#   cannot answer differently over the two. The channel's requests are parsed by the package's
#   `http_request_parse`, the Rust reference of the convention: a Python service accepts
#   exactly the requests the Rust services accept. An answer over shm leaves out content-length
#   and date (HTTP framing) and x-transport (the gateway says which tier carried the body); the
#   content type travels in its own field.

import argparse
import json
import os
import re
import signal
import sys
import threading
from http import HTTPStatus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The modules beside this file, found through the path set above.
from users_bodies import Bodies  # noqa: E402
from users_http import make_server  # noqa: E402
from users_query import QueryError, parse_query  # noqa: E402

try:
    import shmbridge
except ImportError as error:  # the native package is built separately (maturin)
    shmbridge = None
    SHMBRIDGE_IMPORT_ERROR = f"the shmbridge package is not installed ({error})"
else:
    SHMBRIDGE_IMPORT_ERROR = None

CRC_HEADER = "x-payload-crc32"
TRANSPORT_HEADER = "x-transport"
RETRY_AFTER_SECONDS = "1"
SEGMENT_UNAVAILABLE = "segment_unavailable"

# Defaults of the Rust users-service (SegmentConfig::default, ShmArgs, CommonArgs).
DEFAULT_LISTEN = "127.0.0.1:8081"
DEFAULT_SLOT_COUNT = 64
DEFAULT_SLOT_SIZE = 512 * 1024
DEFAULT_CLAIM_TIMEOUT = "200ms"
DEFAULT_LEASE = "1s"
DEFAULT_READY_TTL = "5s"
DEFAULT_SHUTDOWN_TIMEOUT = "10s"



# ---------------------------------------------------------------------------------------------
# Shared memory through the shmbridge package.


class StartError(Exception):
    """A setting the service must not start with (exit status 1, as in Rust)."""


class Segment:
    """The producer, its descriptor socket and what GET /shm/segment says about them."""

    def __init__(self, producer, socket_name: str, layout_version: int, args):
        self.producer = producer
        self.info = {
            "socket": socket_name,
            "epoch": f"{producer.epoch:016x}",
            "layout_version": layout_version,
            "slot_count": args.slot_count,
            "slot_size": args.slot_size,
        }

    @classmethod
    def start(cls, args, handler) -> "Segment":
        """Creates the segment and serves it, answering control-channel requests with
        ``handler``. Raises ``StartError`` for a bad setting and ``SegmentUnavailable`` when
        shared memory cannot be had (then REST is served alone)."""
        if shmbridge is None:
            raise SegmentUnavailable(SHMBRIDGE_IMPORT_ERROR)
        # GET /shm/segment tells gateways the layout they are about to attach to.
        layout_version = getattr(shmbridge, "LAYOUT_VERSION", None)
        if layout_version is None:
            raise SegmentUnavailable("the shmbridge package does not export LAYOUT_VERSION")
        try:
            producer = shmbridge.Producer(
                slot_count=args.slot_count,
                slot_size=args.slot_size,
                path=args.shm_path,
                lease=args.lease,
                ready_ttl=args.ready_ttl,
            )
        except (ValueError, TypeError) as error:
            raise StartError(f"invalid shared-memory settings: {error}") from error
        except (shmbridge.Error, OSError) as error:
            where = f" at {args.shm_path}" if args.shm_path else ""
            raise SegmentUnavailable(
                f"cannot create the shared-memory segment{where}: {error}"
            ) from error
        socket_name = args.shm_socket or f"shmbridge-users-{os.getpid()}-{producer.epoch:016x}"
        try:
            served = producer.serve(handler, socket_name)
        except (ValueError, shmbridge.Error, OSError) as error:
            # As in Rust, a socket that cannot be served (a name in use) is not started with.
            producer.close()
            raise StartError(f"cannot serve the control socket @{socket_name}: {error}") from error
        return cls(producer, served, layout_version, args)

    def publish_for_http(self, body: bytes, timeout: float):
        return self.producer.publish(body, timeout=timeout)

    def close(self) -> None:
        self.producer.close()


class SegmentUnavailable(Exception):
    """Shared memory could not be set up; REST is still served."""


# Headers an HTTP answer has that an answer over shared memory does not: the content type
# travels in its own field, content-length and date belong to the HTTP framing, and which
# transport carried a body is for the one that carried it (the gateway) to say.
# ---------------------------------------------------------------------------------------------
# HTTP.


class ApiError(Exception):
    """An error answer: status, stable code, client-facing message (api_error.rs)."""

    def __init__(self, status: HTTPStatus, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _compact(value, sort_keys: bool) -> bytes:
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys
    ).encode()


class Service:
    """The routes, and what the HTTP and shared-memory request handlers share: both answer
    through ``answer``, so a route answers the same bytes either way."""

    # path -> {method: route}; other methods on a known path are a 405 with Allow.
    ROUTES = {
        "/users": {"GET": "get_users"},
        "/healthz": {"GET": "get_healthz"},
        "/readyz": {"GET": "get_readyz"},
        "/shm/segment": {"GET": "get_segment"},
        "/shm/users": {"POST": "post_shm_users"},
    }

    def __init__(self, args, bodies: Bodies):
        self.args = args
        self.bodies = bodies
        # Set by `main`: the segment, or why there is none.
        self.segment = None
        self.segment_error = None
        self._in_flight = 0
        self._idle = threading.Condition()

    def segment_or_503(self) -> Segment:
        if self.segment is None:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE, SEGMENT_UNAVAILABLE, "shared memory is unavailable"
            )
        return self.segment

    def begin(self) -> None:
        with self._idle:
            self._in_flight += 1

    def end(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Waits for in-flight requests to finish; False when ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def wsgi(self, environ, start_response):
        """The service as one WSGI application (PEP 3333), served both ways: over HTTP by
        ``Handler`` and over the control channel by ``shmbridge.wsgi``, so that a route answers
        the same status, headers and bytes on either."""
        self.begin()
        try:
            method = environ["REQUEST_METHOD"]
            query = environ.get("QUERY_STRING", "")
            target = environ.get("PATH_INFO", "/") + (f"?{query}" if query else "")
            status, headers, body = self.answer(method, target)
        finally:
            self.end()
        status = HTTPStatus(status)
        if environ.get("shmbridge.channel"):
            # Over the channel the gateway names the tier that carried the body.
            headers = [(name, value) for name, value in headers if name != TRANSPORT_HEADER]
        headers = list(headers) + [("content-length", str(len(body)))]
        start_response(f"{status.value} {status.phrase}", headers)
        # HEAD is answered as GET without the body, as axum does.
        return [] if method == "HEAD" else [body]

    def answer(self, method: str, target: str) -> tuple:
        """``(status, headers, body)`` for ``method`` on ``target`` (``/path?query``). HEAD is
        answered as GET (the caller leaves the body out), as axum does."""
        path, _, query = target.partition("?")
        methods = self.ROUTES.get(path)
        if methods is None:
            return HTTPStatus.NOT_FOUND, [], b""
        name = methods.get("GET" if method == "HEAD" else method)
        if name is None:
            allowed = ",".join(m for allowed in methods for m in _with_head(allowed))
            return HTTPStatus.METHOD_NOT_ALLOWED, [("allow", allowed)], b""
        try:
            return getattr(self, name)(query)
        except ApiError as error:
            return _error_answer(error)
        except Exception as error:  # a bug: answer 500 and keep serving, as axum would
            message = f"users-service: {method} {path} failed: {error!r}"
            print(message, file=sys.stderr, flush=True)
            internal = ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal", "internal error")
            return _error_answer(internal)

    # Routes ---------------------------------------------------------------------------------

    def get_users(self, query: str):
        count, seed = _parse_or_400(query)
        body, crc = self.bodies.payload(count, seed)
        headers = [
            ("content-type", "application/json"),
            (CRC_HEADER, f"{crc:08x}"),
            (TRANSPORT_HEADER, "api"),
        ]
        return HTTPStatus.OK, headers, body

    def get_healthz(self, _query: str):
        return _json_answer({"status": "ok"}, True)

    def get_readyz(self, _query: str):
        if self.segment is None:
            answer = {"ready": False, "reason": self.segment_error}
            return _json_answer(answer, True, HTTPStatus.SERVICE_UNAVAILABLE)
        return _json_answer({"ready": True, "segment": self.segment.info}, True)

    def get_segment(self, _query: str):
        # A struct in Rust: its fields in declaration order, not sorted.
        return _json_answer(self.segment_or_503().info, False)

    def post_shm_users(self, query: str):
        if not self.args.http_signal:
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                "http_signal_disabled",
                "POST /shm/users is off: gateways ask over the control socket (start "
                "users-service with --http-signal to enable it)",
            )
        count, seed = _parse_or_400(query)
        segment = self.segment_or_503()
        body = self.bodies.body(count, seed)
        handle = _publish(segment, body, self.args.claim_timeout, self.args.slot_size)
        headers = [("content-type", "text/plain; charset=utf-8"), (CRC_HEADER, f"{handle.crc:08x}")]
        return HTTPStatus.OK, headers, str(handle).encode()


def _error_answer(error: ApiError):
    headers = [("content-type", "application/json")]
    if error.status == HTTPStatus.SERVICE_UNAVAILABLE:
        headers.append(("retry-after", RETRY_AFTER_SECONDS))
    return error.status, headers, _compact({"error": error.message, "code": error.code}, True)


def _json_answer(value, sort_keys: bool, status=HTTPStatus.OK):
    return status, [("content-type", "application/json")], _compact(value, sort_keys)


def _with_head(method: str):
    return ("GET", "HEAD") if method == "GET" else (method,)


def _parse_or_400(query: str) -> tuple:
    try:
        return parse_query(query)
    except QueryError as error:
        raise ApiError(HTTPStatus.BAD_REQUEST, "bad_query", str(error)) from error


def _publish(segment: Segment, body: bytes, timeout: float, slot_size: int):
    """Publishes for POST /shm/users, mapping the typed errors as api_error.rs does."""
    try:
        return segment.publish_for_http(body, timeout)
    except shmbridge.TooLarge as error:
        raise ApiError(
            HTTPStatus.INSUFFICIENT_STORAGE,
            "too_large_for_slot",
            f"payload of {len(body)} bytes is larger than a shared-memory slot ({slot_size} bytes)",
        ) from error
    except shmbridge.Exhausted as error:
        raise ApiError(
            HTTPStatus.SERVICE_UNAVAILABLE, "slots_exhausted", "no free shared-memory slot"
        ) from error
    except shmbridge.Busy as error:
        raise ApiError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "shm_busy",
            "too many shared-memory publications waiting to be redeemed",
        ) from error
    except shmbridge.Closed as error:
        raise ApiError(
            HTTPStatus.SERVICE_UNAVAILABLE, SEGMENT_UNAVAILABLE, "shared memory is unavailable"
        ) from error
    except shmbridge.Error as error:
        print(f"users-service: publication failed: {error}", file=sys.stderr, flush=True)
        raise ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal", "internal error") from error


# ---------------------------------------------------------------------------------------------
# Command line.


def _listen(text: str) -> tuple:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ns|us|µs|ms|s|m|h)", re.ASCII)
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    """Seconds from a humantime-style duration such as ``200ms``, ``1s``, ``1m 30s``."""
    refusal = argparse.ArgumentTypeError(f"expected a duration such as 200ms or 1s, got {text!r}")
    text = text.strip()
    if not text:
        raise refusal
    position, total = 0, 0.0
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise refusal
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
        while position < len(text) and text[position] == " ":
            position += 1
    return total


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def parse_args(argv=None):
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="users-service",
        description="The producer, in Python: serves the users dataset over HTTP and through "
        "shared memory (byte-identical to the Rust users-service).",
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        default=_listen(env("SHMBRIDGE_USERS_LISTEN", DEFAULT_LISTEN)),
        help="HOST:PORT to listen on; port 0 picks a free port (printed on stdout)",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        default=_env_flag("SHMBRIDGE_USERS_CACHE"),
        help="serve bodies serialized once per (count, seed) instead of per request",
    )
    parser.add_argument(
        "--http-signal",
        action="store_true",
        default=_env_flag("SHMBRIDGE_HTTP_SIGNAL"),
        help="also publish on POST /shm/users, answering with the handle (the seed's design)",
    )
    parser.add_argument(
        "--slot-count",
        type=int,
        default=int(env("SHMBRIDGE_SLOT_COUNT", DEFAULT_SLOT_COUNT)),
        help="slots in the segment",
    )
    parser.add_argument(
        "--slot-size",
        type=int,
        default=int(env("SHMBRIDGE_SLOT_SIZE", DEFAULT_SLOT_SIZE)),
        help="bytes per slot (a multiple of 64)",
    )
    parser.add_argument(
        "--shm-socket",
        default=env("SHMBRIDGE_SHM_SOCKET"),
        help="abstract socket name for the descriptor and the control channel "
        "(default shmbridge-users-PID-EPOCH)",
    )
    parser.add_argument(
        "--shm-path",
        default=env("SHMBRIDGE_SHM_PATH"),
        help="create the segment as a file at this path instead of a sealed memfd",
    )
    parser.add_argument(
        "--claim-timeout",
        type=_duration,
        default=_duration(env("SHMBRIDGE_CLAIM_TIMEOUT", DEFAULT_CLAIM_TIMEOUT)),
        help="how long POST /shm/users waits for a free slot (default 200ms)",
    )
    parser.add_argument(
        "--lease",
        type=_duration,
        default=_duration(env("SHMBRIDGE_LEASE", DEFAULT_LEASE)),
        help="how long a publication may hold its slot while writing it (default 1s)",
    )
    parser.add_argument(
        "--ready-ttl",
        type=_duration,
        default=_duration(env("SHMBRIDGE_READY_TTL", DEFAULT_READY_TTL)),
        help="how long a published slot waits for its reader (default 5s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=_duration,
        default=_duration(env("SHMBRIDGE_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT)),
        help="how long in-flight requests may run after SIGTERM (default 10s)",
    )
    parser.add_argument(
        "--no-shm",
        action="store_true",
        help="serve REST only, without creating a segment (/readyz answers 503)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM and SIGINT are blocked in every thread (threads inherit the mask, the native
    # producer's included) and taken by the main thread with sigtimedwait: no handler runs
    # at an arbitrary point, and one sent right after the announcement waits, pending.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    service = Service(args, Bodies(args.cache))
    segment = None
    if args.no_shm:
        service.segment_error = "started with --no-shm"
    else:
        try:
            # The control channel answers through the service's routes; /shm/segment and
            # /readyz describe the segment once it is set below, before anything is announced.
            segment = Segment.start(args, shmbridge.wsgi.handler(service.wsgi))
            service.segment = segment
        except StartError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        except SegmentUnavailable as error:
            service.segment_error = str(error)
            print(
                "users-service: starting without shared memory: no control socket; POST "
                f"/shm/users, GET /shm/segment and /readyz answer 503: {service.segment_error}",
                file=sys.stderr,
                flush=True,
            )
    try:
        try:
            server = make_server(args, service)
        except OSError as error:
            host, port = args.listen
            print(f"error: cannot listen on {host}:{port}: {error}", file=sys.stderr, flush=True)
            return 1
        host, port = server.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on {shown}:{port}", flush=True)
        serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        serving.start()
        # Waking once a second checks that the HTTP thread still runs.
        while signal.sigtimedwait(stop_signals, 1.0) is None:
            if not serving.is_alive():
                print("error: the HTTP server stopped", file=sys.stderr, flush=True)
                return 1
        server.shutdown()
        server.server_close()
        if not service.drain(args.shutdown_timeout):
            print(
                "users-service: in-flight requests outlived --shutdown-timeout",
                file=sys.stderr,
                flush=True,
            )
        return 0
    finally:
        if segment is not None:
            segment.close()


if __name__ == "__main__":
    sys.exit(main())
