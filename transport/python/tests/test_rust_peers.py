"""A Python consumer of the Rust producer: the Rust users-service binary (named by
SHMBRIDGE_USERS_SERVICE_BIN, which ci.sh builds and sets) publishes over its control channel and
the package redeems, both ends checking each other as they would in production."""

import json
import os
import subprocess
import sys
import urllib.request
import zlib

import pytest

import shmbridge

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
sys.path.insert(0, EXAMPLES)

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


def test_a_python_consumer_redeems_the_rust_producers_publications(rust_users_service):
    with shmbridge.Consumer.connect(segment_socket(rust_users_service), timeout=10) as consumer:
        body = consumer.request(DEFAULT_COUNT, DEFAULT_SEED, timeout=10)
        assert len(body) == 256_873
        assert zlib.crc32(body) == 0x5C2A5546
        assert body == users_json(DEFAULT_COUNT, DEFAULT_SEED)
        assert consumer.request(17, 5, timeout=10) == users_json(17, 5)


def test_the_rust_producer_refuses_a_count_above_the_cap_with_a_typed_error(rust_users_service):
    with shmbridge.Consumer.connect(segment_socket(rust_users_service), timeout=10) as consumer:
        with pytest.raises(shmbridge.Error) as refused:
            consumer.request(262_145, 1, timeout=10)
        assert "bad request" in str(refused.value)
        # The connection still serves.
        assert consumer.request(3, 7, timeout=10) == users_json(3, 7)
