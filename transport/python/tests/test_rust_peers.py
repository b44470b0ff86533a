"""A Python consumer of the Rust producer: the Rust users-service binary (named by
SHMBRIDGE_USERS_SERVICE_BIN, which ci.sh builds and sets) answers HTTP-over-shm requests over
its control channel and the package redeems, both ends checking each other as they would in
production."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zlib

import pytest

import shmbridge

# The Python users dataset, beside the Rust users-service it mirrors.
SERVICE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "server", "python")
sys.path.insert(0, SERVICE_DIR)

from users_dataset import DEFAULT_COUNT, DEFAULT_SEED, users_json  # noqa: E402

BINARY = os.environ.get("SHMBRIDGE_USERS_SERVICE_BIN")


@pytest.fixture
def rust_users_service():
    if not BINARY:
        pytest.skip("SHMBRIDGE_USERS_SERVICE_BIN is not set (ci.sh sets it)")
    child = subprocess.Popen(
        [BINARY, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.startswith("listening on "), line
        yield "http://" + line.split()[-1]
    finally:
        child.kill()
        child.wait(timeout=10)


def segment_socket(base: str) -> str:
    with urllib.request.urlopen(base + "/shm/segment", timeout=10) as answer:
        return json.load(answer)["socket"]


def over_http(base: str, target: str):
    """``(status, content type, body)`` of a GET, errors included."""
    try:
        with urllib.request.urlopen(base + target, timeout=10) as answer:
            return answer.status, answer.headers.get("content-type", ""), answer.read()
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, refused.headers.get("content-type", ""), refused.read()


def get(consumer, target: str):
    return consumer.request(shmbridge.http_request_encode("GET", target), timeout=10)


def test_a_python_consumer_redeems_the_rust_producers_responses(rust_users_service):
    with shmbridge.Consumer.connect(segment_socket(rust_users_service), timeout=10) as consumer:
        response = get(consumer, f"/users?count={DEFAULT_COUNT}&seed={DEFAULT_SEED}")
        assert (response.status, response.content_type) == (200, "application/json")
        assert len(response.body) == 256_873
        assert zlib.crc32(response.body) == 0x5C2A5546
        assert response.body == users_json(DEFAULT_COUNT, DEFAULT_SEED)
        assert get(consumer, "/users?count=17&seed=5").body == users_json(17, 5)


def test_the_rust_producer_answers_over_shm_as_over_http_errors_included(rust_users_service):
    with shmbridge.Consumer.connect(segment_socket(rust_users_service), timeout=10) as consumer:
        for target in ("/users?count=3&seed=7", "/users?count=262145&seed=1", "/users?x=1"):
            response = get(consumer, target)
            shm = (response.status, response.content_type, response.body)
            assert shm == over_http(rust_users_service, target), target
        # The refusals were answers, not failures: the connection still serves.
        assert get(consumer, "/users?count=3&seed=7").body == users_json(3, 7)
