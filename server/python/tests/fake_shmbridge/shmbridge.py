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


def _log(event, **fields):
    with open(os.environ["FAKE_SHMBRIDGE_LOG"], "a") as log:
        log.write(json.dumps({"event": event, **fields}) + "\n")


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
        served = "wsgi" if isinstance(handler, _WsgiHandler) else type(handler).__name__
        self.socket_name = socket_name or "fake-default"
        _log("serve", socket=self.socket_name, handler=served)
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


class _WsgiHandler:
    """What ``wsgi.handler`` made: the app it serves, for ``serve`` to record."""

    def __init__(self, app):
        self.app = app


class wsgi:  # noqa: N801  (stands in for the package's submodule)
    """``shmbridge.wsgi``: what the real one answers over the channel is the real package's to
    test (transport/python/tests); here only that the service hands its WSGI app to it."""

    @staticmethod
    def handler(app, server_name="localhost", server_port="80"):
        return _WsgiHandler(app)
