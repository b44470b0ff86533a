"""The Python users-service (server/python/users_service.py) over real HTTP, for the routes that
need no shared memory: started as a subprocess on port 0 (the address read from its one
`listening on` line), always killed afterwards. The expected bytes of every error body are the
Rust users-service's answers to the same requests."""

import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import zlib

import pytest

SERVICE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, SERVICE_DIR)

from users_dataset import users_json  # noqa: E402

SERVICE = os.path.join(SERVICE_DIR, "users_service.py")
START_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0


class Service:
    """users_service.py as a child process; `stop()` (or the fixture) always reaps it."""

    def __init__(self, *flags):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHMBRIDGE_")}
        self.process = subprocess.Popen(
            [sys.executable, SERVICE, "--listen", "127.0.0.1:0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            line = self._first_line(START_TIMEOUT)
            assert line.startswith("listening on 127.0.0.1:"), line
            self.host, port = line.removeprefix("listening on ").rsplit(":", 1)
            self.port = int(port)
        except BaseException:
            self.kill()
            raise

    def _first_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        buffered = b""
        try:
            while not buffered.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise AssertionError(f"no `listening on` line within {timeout} s")
                chunk = os.read(self.process.stdout.fileno(), 1)
                if not chunk:
                    raise AssertionError(f"exited early: {self.process.stderr.read()!r}")
                buffered += chunk
        finally:
            selector.close()
        return buffered.decode().rstrip("\n")

    def request(self, method: str, path: str, connection=None):
        own = connection is None
        connection = connection or http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, headers, body
        finally:
            if own:
                connection.close()

    def get(self, path: str):
        return self.request("GET", path)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(EXIT_TIMEOUT)
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture
def start():
    started = []

    def start_service(*flags):
        service = Service(*flags)
        started.append(service)
        return service

    yield start_service
    for service in started:
        service.kill()


@pytest.fixture
def service(start):
    return start("--no-shm")


@pytest.mark.parametrize("flags", [(), ("--cache",)], ids=["per-request", "cache"])
def test_default_users_body_is_the_dataset_with_headers(start, flags):
    service = start("--no-shm", *flags)
    for _ in range(2):  # the second answer comes from the caches
        status, headers, body = service.get("/users")
        assert status == 200
        assert len(body) == 256_873
        assert body == users_json()
        assert headers["content-type"] == "application/json"
        assert headers["content-length"] == "256873"
        assert headers["x-payload-crc32"] == "5c2a5546"
        assert headers["x-transport"] == "api"


def test_count_and_seed_select_the_body(service):
    status, headers, body = service.get("/users?count=17&seed=5")
    assert status == 200
    assert (len(body), zlib.crc32(body)) == (6177, 0x342FD311)  # the Rust service's answer
    assert headers["x-payload-crc32"] == "342fd311"
    # Parameters in either order, a leading + on the seed, and empty pieces, as Rust parses them.
    assert service.get("/users?seed=5&count=17")[2] == body
    assert service.get("/users?&count=17&&seed=%2B5")[2] == body


def test_zero_users_is_an_empty_array(service):
    status, headers, body = service.get("/users?count=0")
    assert (status, body, headers["content-length"]) == (200, b"[]", "2")


# The Rust users-service's exact answers (status 400, content-type application/json).
BAD_QUERIES = {
    "/users?limit=3": 'unknown query parameter \\"limit\\"; accepted parameters are count and seed',
    "/users?count=abc": "query parameter count must be a non-negative integer from 0 to 10000, "
    'got \\"abc\\"',
    "/users?count=-1": "query parameter count must be a non-negative integer from 0 to 10000, "
    'got \\"-1\\"',
    "/users?count=": "query parameter count must be a non-negative integer from 0 to 10000, "
    'got \\"\\"',
    "/users?seed=x": "query parameter seed must be a non-negative integer from 0 to "
    '18446744073709551615, got \\"x\\"',
    "/users?seed=18446744073709551616": "query parameter seed must be a non-negative integer "
    'from 0 to 18446744073709551615, got \\"18446744073709551616\\"',
    "/users?count=10001": 'count \\"10001\\" is above the maximum of 10000',
    "/users?count=99999999999999999999999": 'count \\"99999999999999999999999\\" is above the '
    "maximum of 10000",
    "/users?count=1&count=2": "query parameter count is given more than once",
    "/users?" + "x" * 50 + "=1": 'unknown query parameter \\"' + "x" * 40 + '…\\"; accepted '
    "parameters are count and seed",
    "/users?count=%C3%A9%22%5C%0A": "query parameter count must be a non-negative integer from "
    '0 to 10000, got \\"é\\\\\\"\\\\\\\\\\\\n\\"',
}


@pytest.mark.parametrize("path", sorted(BAD_QUERIES))
def test_every_bad_query_is_the_rust_services_400(service, path):
    status, headers, body = service.get(path)
    assert status == 400
    assert headers["content-type"] == "application/json"
    expected = '{"code":"bad_query","error":"' + BAD_QUERIES[path] + '"}'
    assert body.decode() == expected
    assert headers["content-length"] == str(len(body))


def test_a_huge_digit_string_is_a_400_not_a_crash(service):
    status, _, body = service.get("/users?count=" + "9" * 5000)
    assert status == 400
    assert json.loads(body)["code"] == "bad_query"
    # Leading zeros are still a number, as in Rust.
    status, _, body = service.get("/users?count=" + "0" * 5000 + "2&seed=1")
    assert (status, body) == (200, users_json(2, 1))


def test_healthz_and_readyz_without_a_segment(service):
    assert service.get("/healthz")[::2] == (200, b'{"status":"ok"}')
    status, headers, body = service.get("/readyz")
    assert status == 503
    assert json.loads(body) == {"ready": False, "reason": "started with --no-shm"}
    assert "retry-after" not in headers


def test_shm_routes_without_a_segment_answer_503_with_the_stable_code(service):
    status, headers, body = service.get("/shm/segment")
    assert status == 503
    assert headers["retry-after"] == "1"
    assert body == b'{"code":"segment_unavailable","error":"shared memory is unavailable"}'


def test_post_shm_users_is_off_without_http_signal(service):
    status, _, body = service.request("POST", "/shm/users?count=3")
    assert status == 404
    assert json.loads(body)["code"] == "http_signal_disabled"


def test_unknown_paths_and_methods(service):
    for path in ("/nope", "/users/", "/"):
        assert service.get(path)[::2] == (404, b"")
    status, headers, body = service.request("POST", "/users")
    assert (status, headers["allow"], body) == (405, "GET,HEAD", b"")
    status, headers, _ = service.get("/shm/users")
    assert (status, headers["allow"]) == (405, "POST")


def test_head_sends_the_get_headers_without_a_body(service):
    status, headers, body = service.request("HEAD", "/users?count=5")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(len(users_json(5, 28)))
    assert headers["x-payload-crc32"] == f"{zlib.crc32(users_json(5, 28)):08x}"


def test_one_connection_serves_several_requests(service):
    connection = http.client.HTTPConnection(service.host, service.port, timeout=10)
    try:
        for count in (3, 4, 0):
            status, _, body = service.request("GET", f"/users?count={count}", connection)
            assert (status, body) == (200, users_json(count, 28))
        assert service.request("GET", "/users?count=x", connection)[0] == 400
        assert service.request("GET", "/users?count=1", connection)[2] == users_json(1, 28)
    finally:
        connection.close()


def test_sigterm_exits_with_status_0(service):
    assert service.get("/healthz")[0] == 200
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(EXIT_TIMEOUT) == 0


def test_a_port_in_use_is_a_clean_exit_1(service):
    taken = subprocess.run(
        [sys.executable, SERVICE, "--no-shm", "--listen", f"127.0.0.1:{service.port}"],
        capture_output=True,
        check=False,
        timeout=EXIT_TIMEOUT,
    )
    assert taken.returncode == 1
    assert taken.stdout == b""
    assert taken.stderr.startswith(f"error: cannot listen on 127.0.0.1:{service.port}".encode())


# The shared-memory wiring, against tests/fake_shmbridge (the package API's shape) so that it is
# checked without the native package; transport/python/tests/test_package.py runs the service
# with the real one.

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_shmbridge")
FAKE_EPOCH = "0123456789abcdef"


@pytest.fixture
def start_with_fake(start, tmp_path, monkeypatch):
    log = tmp_path / "events.jsonl"
    monkeypatch.setenv("PYTHONPATH", FAKE)
    monkeypatch.setenv("FAKE_SHMBRIDGE_LOG", str(log))

    def start_service(*flags):
        return start("--slot-count", "4", "--slot-size", "65536", *flags)

    def events():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    start_service.events = events
    return start_service


def test_segment_info_names_the_socket_epoch_and_geometry(start_with_fake):
    service = start_with_fake("--lease", "1500ms", "--ready-ttl", "2s")
    status, _, body = service.get("/shm/segment")
    socket = f"shmbridge-users-{service.process.pid}-{FAKE_EPOCH}"
    assert status == 200
    # A struct in Rust: fields in declaration order.
    assert body.decode() == (
        f'{{"socket":"{socket}","epoch":"{FAKE_EPOCH}","layout_version":2,"slot_count":4,'
        '"slot_size":65536}'
    )
    status, _, body = service.get("/readyz")
    assert status == 200
    # A json! map in Rust: keys sorted, the segment's too.
    assert body.decode() == (
        f'{{"ready":true,"segment":{{"epoch":"{FAKE_EPOCH}","layout_version":2,'
        f'"slot_count":4,"slot_size":65536,"socket":"{socket}"}}}}'
    )
    create, serve = start_with_fake.events()[:2]
    assert create == {
        "event": "create", "slot_count": 4, "slot_size": 65536, "path": None, "lease": 1.5,
        "ready_ttl": 2.0,
    }  # fmt: skip
    # The control channel serves the service's WSGI application through shmbridge.wsgi; what
    # that answers, route by route against HTTP, is tested with the real package
    # (transport/python/tests/test_package.py).
    assert serve == {"event": "serve", "socket": socket, "handler": "wsgi"}


def test_shm_socket_flag_names_the_socket(start_with_fake):
    service = start_with_fake("--shm-socket", "py-users-test", "--cache")
    assert json.loads(service.get("/shm/segment")[2])["socket"] == "py-users-test"


def test_http_signal_publishes_and_maps_typed_errors(start_with_fake, monkeypatch):
    service = start_with_fake("--http-signal", "--claim-timeout", "50ms")
    status, headers, body = service.request("POST", "/shm/users?count=30&seed=8")
    crc = f"{zlib.crc32(users_json(30, 8)):08x}"
    assert (status, headers["content-type"], headers["x-payload-crc32"]) == (
        200, "text/plain; charset=utf-8", crc,
    )  # fmt: skip
    assert body.decode() == f"{FAKE_EPOCH}-1-1-{len(users_json(30, 8)):x}-{crc}"
    assert start_with_fake.events()[-1] == {
        "event": "publish", "len": len(users_json(30, 8)), "timeout": 0.05,
    }  # fmt: skip
    status, headers, body = service.request("POST", "/shm/users?count=1000")
    assert status == 507
    assert json.loads(body) == {
        "code": "too_large_for_slot",
        "error": f"payload of {len(users_json(1000, 28))} bytes is larger than a "
        "shared-memory slot (65536 bytes)",
    }
    assert service.request("POST", "/shm/users?count=x")[0] == 400

    monkeypatch.setenv("FAKE_SHMBRIDGE_EXHAUSTED", "1")
    exhausted = start_with_fake("--http-signal")
    status, headers, body = exhausted.request("POST", "/shm/users?count=1")
    assert (status, headers["retry-after"]) == (503, "1")
    assert json.loads(body)["code"] == "slots_exhausted"


def test_sigterm_closes_the_producer(start_with_fake):
    service = start_with_fake()
    assert service.get("/readyz")[0] == 200
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(EXIT_TIMEOUT) == 0
    assert start_with_fake.events()[-1] == {"event": "close"}


def test_bad_geometry_refuses_to_start(start_with_fake):
    refused = subprocess.run(
        [sys.executable, SERVICE, "--listen", "127.0.0.1:0", "--slot-size", "1000"],
        capture_output=True,
        check=False,
        timeout=EXIT_TIMEOUT,
    )
    assert (refused.returncode, refused.stdout) == (1, b"")
    assert b"error: invalid shared-memory settings: slot size 1000" in refused.stderr


def test_a_control_socket_in_use_refuses_to_start_and_closes_the_segment(start_with_fake):
    refused = subprocess.run(
        [sys.executable, SERVICE, "--listen", "127.0.0.1:0", "--shm-socket", "taken"],
        capture_output=True,
        check=False,
        timeout=EXIT_TIMEOUT,
    )
    assert (refused.returncode, refused.stdout) == (1, b"")
    assert (
        refused.stderr == b"error: cannot serve the control socket @taken: address already in use\n"
    )
    assert [event["event"] for event in start_with_fake.events()] == ["create", "close"]


def test_an_uncreatable_segment_leaves_rest_serving(start_with_fake, tmp_path):
    path = tmp_path / "missing" / "segment"
    service = start_with_fake("--shm-path", str(path))
    assert service.get("/users?count=2")[2] == users_json(2, 28)
    status, _, body = service.get("/readyz")
    assert status == 503
    assert json.loads(body)["reason"] == (
        f"cannot create the shared-memory segment at {path}: create segment file failed: "
        f"no directory for {path}"
    )
    assert service.get("/shm/segment")[0] == 503
