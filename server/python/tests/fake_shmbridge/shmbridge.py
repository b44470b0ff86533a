"""A stand-in for the native `shmbridge` package with its API's shape, for checking how
users_service.py wires a Producer (constructor arguments, serve's handler and socket name,
publish's typed errors, close on exit) without shared memory. It is put on PYTHONPATH of one
child process only, never imported by pytest itself, so it cannot shadow the real package.
Each event is appended as a JSON line to $FAKE_SHMBRIDGE_LOG."""

import json
import os
import zlib

LAYOUT_VERSION = 2
EPOCH = 0x0123_4567_89AB_CDEF


class Error(Exception):
    pass


class AttachError(Error):
    pass


class Exhausted(Error):
    pass


class TooLarge(Error):
    pass


class Busy(Error):
    pass


class Closed(Error):
    pass


def _answer(response):
    """What the consumer of a handler's answer would see of it."""
    if isinstance(response, bytes):
        response = Response(body=response)
    return {
        "status": response.status,
        "content_type": response.content_type,
        "headers": response.headers,
        "len": len(response.body),
        "crc": zlib.crc32(response.body),
    }


def _log(event, **fields):
    with open(os.environ["FAKE_SHMBRIDGE_LOG"], "a") as log:
        log.write(json.dumps({"event": event, **fields}) + "\n")


class Response:
    def __init__(self, status=200, body=b"", content_type="", headers=()):
        if not isinstance(body, bytes):
            raise TypeError("body must be bytes")
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = [tuple(header) for header in headers]
        self.tier = None


def http_request_parse(request):
    """The convention's shape, without the native package's checks of every rule."""
    head, separator, body = request.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("the head does not end with an empty line")
    line, *lines = head.decode("ascii").split("\r\n")
    method, space, target = line.partition(" ")
    if not space or not target.startswith("/"):
        raise ValueError("the request line is not `METHOD /target`")
    return method, target, [tuple(header.split(": ", 1)) for header in lines], body


class Handle:
    def __init__(self, slot, length, crc):
        self.epoch, self.slot, self.generation, self.len, self.crc = EPOCH, slot, 1, length, crc

    def __str__(self):
        return f"{self.epoch:016x}-{self.slot:x}-{self.generation:x}-{self.len:x}-{self.crc:08x}"


class Producer:
    def __init__(self, slot_count=64, slot_size=524288, path=None, lease=1.0, ready_ttl=5.0):
        if slot_size % 64:
            raise ValueError(f"slot size {slot_size} is not a multiple of 64")
        if path is not None and not os.path.isdir(os.path.dirname(path)):
            raise Error(f"create segment file failed: no directory for {path}")
        self.epoch = EPOCH
        self.socket_name = None
        self._slot_size = slot_size
        self._published = 0
        self._exhausted = os.environ.get("FAKE_SHMBRIDGE_EXHAUSTED") == "1"
        _log(
            "create",
            slot_count=slot_count,
            slot_size=slot_size,
            path=path,
            lease=lease,
            ready_ttl=ready_ttl,
        )

    def serve(self, handler, socket_name=None):
        if socket_name == "taken":
            raise Error("address already in use")
        # What the control channel would ask: a good query, one over the cap, and bytes that
        # are no HTTP request.
        answers = [
            _answer(handler(request))
            for request in (
                b"GET /users?count=17&seed=5\r\n\r\n",
                b"GET /users?count=10001\r\n\r\n",
                b"no request",
            )
        ]
        self.socket_name = socket_name or "fake-default"
        _log("serve", socket=self.socket_name, answers=answers)
        return self.socket_name

    def publish(self, data, timeout=0.2):
        if len(data) > self._slot_size:
            raise TooLarge(f"{len(data)} > {self._slot_size}")
        if self._exhausted:
            raise Exhausted(f"no free slot within {timeout} s")
        self._published += 1
        _log("publish", len=len(data), timeout=timeout)
        return Handle(self._published % 4, len(data), zlib.crc32(data))

    def close(self):
        _log("close")
