"""Serve any WSGI application (PEP 3333) over a shmbridge producer's control channel.

``serve(app, producer)`` answers each control-channel request, an HTTP request in the channel's
encoding (``shmbridge.http_request_parse``; bytes that are not one fail that request with
HandlerFailed, as in the Rust users-service), by calling ``app`` with the environ that request
makes (with ``environ["shmbridge.channel"]`` set), and hands back its status and headers as the response head and its body iterable as
the body, each chunk written straight into the tier the body grows into (inline, a slot, a
sealed memfd), so a large body is never joined in Python. The app's ordinary HTTP server runs
alongside, unchanged: the same app answers both ways.
"""

import io
import sys
from urllib.parse import unquote

# Headers that describe one HTTP connection, not the response: not carried over the channel.
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade")
)


def environ_for(request, server_name="localhost", server_port="80"):
    """The WSGI environ of ``request``, an HTTP request in the channel's encoding (bytes)."""
    import shmbridge

    method, target, headers, body = shmbridge.http_request_parse(request)
    path, _, query = target.partition("?")
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        # PEP 3333: the path decoded as the server saw it, carried in a latin-1 str.
        "PATH_INFO": unquote(path, encoding="latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        # PEP 3333 lets a server add its own keys: this one tells an app that wants to know
        # (to leave out a header naming its HTTP carrier, say) that the channel asked.
        "shmbridge.channel": True,
        "CONTENT_LENGTH": str(len(body)) if body else "",
    }
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if key == "CONTENT_TYPE":
                environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = environ[key] + "," + value if key in environ else value
    return environ


def handler(app, server_name="localhost", server_port="80"):
    """The control-channel handler that answers with ``app``: for ``Producer.serve``."""
    import shmbridge

    def answer(request):
        started = []
        written = []

        def start_response(status, response_headers, exc_info=None):
            if exc_info is not None:
                try:
                    if started and written:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif started:
                raise AssertionError("start_response called twice without exc_info")
            started[:] = [status, response_headers]
            return written.append

        result = app(environ_for(request, server_name, server_port), start_response)
        try:
            # The head is known once the app returned, or at the latest with its first chunk.
            chunks = iter(result)
            first = next(chunks, None) if not started else None
        except BaseException:
            _close(result)
            raise
        if not started:
            _close(result)
            raise RuntimeError("the WSGI application returned without calling start_response")
        status, response_headers = started
        content_type = ""
        headers = []
        for name, value in response_headers:
            lowered = name.lower()
            if lowered == "content-type":
                content_type = value
            elif lowered not in _HOP_BY_HOP and lowered != "content-length":
                headers.append((name, value))
        head = shmbridge.Response(int(status.split(" ", 1)[0]), b"", content_type, headers)
        return head, _body(written, first, chunks, result)

    return answer


def _body(written, first, chunks, result):
    """The body's chunks: what the app wrote through ``write``, then its iterable; closes the
    iterable afterwards, as PEP 3333 requires, however the iteration ends."""
    try:
        yield from (_bytes(chunk) for chunk in written)
        if first is not None:
            yield _bytes(first)
        for chunk in chunks:
            yield _bytes(chunk)
    finally:
        _close(result)


def _bytes(chunk):
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"a WSGI application's body chunks are bytes, not {type(chunk).__name__}")


def _close(result):
    close = getattr(result, "close", None)
    if close is not None:
        close()


def serve(app, producer, socket_name=None, *, server_name="localhost", server_port="80", **options):
    """Serves ``app`` on ``producer``'s control channel and returns the socket name; ``options``
    are ``Producer.serve``'s (``inline_threshold``, ``allowed_uids``, the unredeemed limits).
    ``server_name`` and ``server_port`` fill the environ's SERVER_NAME and SERVER_PORT."""
    return producer.serve(handler(app, server_name, server_port), socket_name, **options)
