"""The native `shmbridge` package against real segments: bytes, crc32s (zlib's, so the same
checksum a Python peer would compute) and exception types of every path, in one process and
between processes. Needs the package installed (`pip install ./transport/python`)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib

import pytest

# Not importorskip: without the package these tests must fail, not pass as skipped.
import shmbridge

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
sys.path.insert(0, EXAMPLES)

from users_dataset import DEFAULT_COUNT, DEFAULT_SEED, users_json

# The seed report's payload: what the Rust users-service serves for the defaults.
SEED_PAYLOAD_LEN = 256_873
SEED_PAYLOAD_CRC = 0x5C2A5546
# Byte offset of layout_version in the segment header (transport/src/layout.rs).
LAYOUT_VERSION_OFFSET = 8


def payload(count: int, seed: int) -> bytes:
    """Deterministic bytes for a callback: cheap, and different for every (count, seed)."""
    return seed.to_bytes(8, "little") * count


@pytest.fixture
def producer():
    with shmbridge.Producer(slot_count=8, slot_size=64 * 1024) as producer:
        yield producer


@pytest.fixture
def served(producer):
    """A producer serving `payload` on its control channel, and a consumer connected to it."""
    with shmbridge.Consumer.connect(producer.serve(payload)) as consumer:
        yield producer, consumer


def test_exceptions_form_one_hierarchy():
    for name in (
        "AttachError", "Exhausted", "TooLarge", "Busy", "Stale", "ChecksumMismatch", "TimedOut",
        "Closed",
    ):  # fmt: skip
        assert issubclass(getattr(shmbridge, name), shmbridge.Error), name
    assert issubclass(shmbridge.VersionMismatch, shmbridge.AttachError)
    assert issubclass(shmbridge.Error, Exception)
    assert shmbridge.LAYOUT_VERSION == 2


def test_handle_text_round_trips_and_refuses_non_canonical_text():
    handle = shmbridge.Handle(0x9F86_D081_884C_7D65, 3, 0x1A, 256_873, 0x5D41_402A)
    assert str(handle) == "9f86d081884c7d65-3-1a-3eb69-5d41402a"
    assert shmbridge.Handle.parse(str(handle)) == handle
    assert hash(shmbridge.Handle.parse(str(handle))) == hash(handle)
    assert eval(repr(handle), {"Handle": shmbridge.Handle}) == handle
    fields = (handle.epoch, handle.slot, handle.generation, handle.len, handle.crc)
    assert fields == (0x9F86_D081_884C_7D65, 3, 0x1A, 256_873, 0x5D41_402A)
    assert handle != shmbridge.Handle(0x9F86_D081_884C_7D65, 3, 0x1A, 256_873, 0)
    for text in (
        "",
        "9F86D081884C7D65-3-1a-3eb69-5d41402a",
        "9f86d081884c7d65-03-1a-3eb69-5d41402a",
    ):
        with pytest.raises(ValueError):
            shmbridge.Handle.parse(text)


def test_publish_and_redeem_round_trip_in_one_process(served):
    producer, consumer = served
    assert consumer.epoch == producer.epoch
    data = users_json(50, 7)
    handle = producer.publish(data)
    assert (handle.epoch, handle.len, handle.crc) == (producer.epoch, len(data), zlib.crc32(data))
    assert consumer.redeem(handle) == data
    # The text form redeems the same way, as it would after travelling in a header.
    text = str(producer.publish(b"x" * 100))
    assert consumer.redeem(text) == b"x" * 100
    empty = producer.publish(b"")
    assert (empty.len, empty.crc) == (0, 0)
    assert consumer.redeem(empty) == b""
    assert producer.stats()["slots"] == {
        "free": 8, "writing": 0, "ready": 0, "reading": 0, "unknown": 0,
    }  # fmt: skip


def test_a_handle_is_redeemable_once(served):
    producer, consumer = served
    handle = producer.publish(b"once")
    assert consumer.redeem(handle) == b"once"
    with pytest.raises(shmbridge.Stale, match="stale handle for slot"):
        consumer.redeem(handle)


def test_a_handle_of_another_segment_is_stale(served):
    producer, consumer = served
    handle = producer.publish(b"mine")
    other = shmbridge.Handle(
        handle.epoch ^ 1, handle.slot, handle.generation, handle.len, handle.crc
    )
    with pytest.raises(shmbridge.Stale, match="segment epoch"):
        consumer.redeem(other)
    assert consumer.redeem(handle) == b"mine"


def test_a_wrong_crc_is_a_checksum_mismatch_and_frees_the_slot(served):
    producer, consumer = served
    handle = producer.publish(b"payload")
    forged = shmbridge.Handle(
        handle.epoch, handle.slot, handle.generation, handle.len, handle.crc ^ 1
    )
    with pytest.raises(shmbridge.ChecksumMismatch, match=f"handle says {handle.crc ^ 1:08x}"):
        consumer.redeem(forged)
    assert producer.stats()["slots"]["free"] == 8


def test_a_payload_larger_than_a_slot_is_too_large(producer):
    with pytest.raises(shmbridge.TooLarge, match="larger than a slot"):
        producer.publish(bytes(64 * 1024 + 1))
    assert producer.publish(bytes(64 * 1024)).len == 64 * 1024


def test_unredeemed_publications_exhaust_the_slots():
    with shmbridge.Producer(slot_count=2, slot_size=4096) as producer:
        first, second = producer.publish(b"a"), producer.publish(b"b")
        assert first.slot != second.slot
        with pytest.raises(shmbridge.Exhausted, match="all 2 slots"):
            producer.publish(b"c", timeout=0.02)
        assert producer.stats()["claims_exhausted"] == 1


def test_bad_geometry_and_durations_are_value_errors():
    with pytest.raises(ValueError, match="multiple of 64"):
        shmbridge.Producer(slot_size=1000)
    with pytest.raises(ValueError, match="slot count"):
        shmbridge.Producer(slot_count=0)
    with pytest.raises(ValueError, match="lease"):
        shmbridge.Producer(lease=0)
    with pytest.raises(ValueError, match="ready_ttl"):
        shmbridge.Producer(ready_ttl=7200)
    with shmbridge.Producer(slot_count=1, slot_size=64) as producer:
        with pytest.raises(ValueError, match="timeout"):
            producer.publish(b"", timeout=-1)
        with pytest.raises(TypeError):
            producer.publish(bytearray(b"mutable"))


def test_request_over_the_control_channel_returns_the_callbacks_bytes(served):
    producer, consumer = served
    for count, seed in [(3, 1), (100, 2**64 - 1), (0, 5)]:
        body = consumer.request(count, seed)
        assert body == payload(count, seed)
    # Each was redeemed: nothing left waiting.
    assert producer.stats()["slots"]["ready"] == 0
    assert producer.socket_name.startswith(f"shmbridge-py-{os.getpid()}-{producer.epoch:016x}")


def test_the_users_dataset_over_the_channel_is_the_seed_payload():
    with shmbridge.Producer(slot_count=4) as producer:
        consumer = shmbridge.Consumer.connect(producer.serve(users_json))
        body = consumer.request(DEFAULT_COUNT, DEFAULT_SEED)
        assert (len(body), zlib.crc32(body)) == (SEED_PAYLOAD_LEN, SEED_PAYLOAD_CRC)
        consumer.close()


def test_a_raising_callback_fails_the_request_and_the_producer_keeps_serving(producer, monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: reported.append(unraisable))

    def callback(count, seed):
        if count == 1:
            raise RuntimeError("callback bug")
        if count == 2:
            raise ValueError("count 2 is not served")
        if count == 3:
            return "not bytes"
        return payload(count, seed)

    with shmbridge.Consumer.connect(producer.serve(callback)) as consumer:
        with pytest.raises(shmbridge.Error, match="the producer failed to publish") as failed:
            consumer.request(1, 0)
        assert type(failed.value) is shmbridge.Error
        with pytest.raises(shmbridge.Error, match="bad request") as refused:
            consumer.request(2, 0)
        assert type(refused.value) is shmbridge.Error
        with pytest.raises(shmbridge.Error, match="the producer failed to publish"):
            consumer.request(3, 0)
        assert consumer.request(4, 9) == payload(4, 9)
    assert [type(unraisable.exc_value) for unraisable in reported] == [
        RuntimeError, ValueError, TypeError,
    ]  # fmt: skip
    assert producer.stats()["slots"]["free"] == 8


def test_a_callback_payload_larger_than_a_slot_travels_sealed(served):
    producer, consumer = served
    count = 64 * 1024 // 8 + 1
    assert consumer.request(count, 1) == payload(count, 1)
    stats = producer.stats()
    assert (stats["sealed_publications"], stats["sealed_bytes_in_flight"]) == (1, 0)
    # A handle alone cannot carry the descriptor: refused, and the publication given back.
    with pytest.raises(shmbridge.TooLarge, match="comes as a descriptor"):
        consumer.request_handle(count, 2)
    deadline = time.monotonic() + 5
    while producer.stats()["sealed_bytes_in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert producer.stats()["sealed_bytes_in_flight"] == 0


def test_the_per_peer_limit_answers_busy(producer):
    name = producer.serve(payload, max_unredeemed_per_peer=2, max_unredeemed=8)
    with shmbridge.Consumer.connect(name) as consumer:
        first = consumer.request_handle(1, 1)
        consumer.request_handle(1, 2)
        with pytest.raises(shmbridge.Busy, match="limit 2"):
            consumer.request_handle(1, 3)
        # Redeeming one makes room again; another connection has its own allowance.
        assert consumer.redeem(first) == payload(1, 1)
        assert consumer.request(1, 4) == payload(1, 4)
        with shmbridge.Consumer.connect(name) as other:
            assert other.request(1, 5) == payload(1, 5)


def test_closing_a_consumer_withdraws_its_unredeemed_publications(producer):
    name = producer.serve(payload)
    consumer = shmbridge.Consumer.connect(name)
    handles = [consumer.request_handle(1, seed) for seed in range(3)]
    assert producer.stats()["slots"]["ready"] == 3
    consumer.close()
    # The producer withdraws them when it sees the connection close: wait for that, bounded.
    deadline = time.monotonic() + 5
    while producer.stats()["withdrawn"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert producer.stats()["withdrawn"] == 3
    with shmbridge.Consumer.connect(name) as late, pytest.raises(shmbridge.Stale):
        late.redeem(handles[0])


def test_a_channel_with_no_free_slot_answers_exhausted():
    with shmbridge.Producer(slot_count=2, slot_size=4096) as producer:
        name = producer.serve(
            payload, claim_timeout=0.02, max_unredeemed_per_peer=4, max_unredeemed=4
        )
        with shmbridge.Consumer.connect(name) as consumer:
            consumer.request_handle(1, 1)
            consumer.request_handle(1, 2)
            with pytest.raises(shmbridge.Exhausted, match="every slot is busy"):
                consumer.request(1, 3)


def test_a_slow_callback_times_the_request_out_without_holding_the_gil(producer):
    entered, release = threading.Event(), threading.Event()

    def slow(count, seed):
        entered.set()
        release.wait(10)
        return payload(count, seed)

    with shmbridge.Consumer.connect(producer.serve(slow)) as consumer:
        with pytest.raises(shmbridge.TimedOut, match="no answer within"):
            consumer.request(1, 1, timeout=1.0)
        # The callback ran on the producer's channel thread while this thread waited in
        # `request`: had it kept the GIL, the callback could only start after it returned.
        assert entered.is_set()
        release.set()
        assert consumer.request(1, 2) == payload(1, 2)


def test_a_closed_producer_or_consumer_raises_closed(producer):
    consumer = shmbridge.Consumer.connect(producer.serve(payload))
    producer.close()
    producer.close()
    with pytest.raises(shmbridge.Closed):
        producer.publish(b"late")
    with pytest.raises(shmbridge.Closed):
        consumer.request(1, 1)
    consumer.close()
    with pytest.raises(shmbridge.Closed):
        consumer.redeem("0000000000000001-0-1-0-00000000")


def test_a_socket_name_in_use_is_refused(producer):
    name = producer.serve(payload)
    with shmbridge.Producer(slot_count=1, slot_size=64) as other:
        with pytest.raises(shmbridge.Error, match=f"@{name}"):
            other.serve(payload, name)
        assert other.socket_name is None


def test_connecting_to_nothing_is_an_attach_error():
    with pytest.raises(shmbridge.AttachError):
        shmbridge.Consumer.connect(f"shmbridge-py-test-nobody-{os.getpid()}", timeout=0.5)


def test_a_segment_of_another_layout_version_is_refused_with_version_mismatch(tmp_path):
    path = tmp_path / "segment"
    # A reaper pass restores a scribbled header; none runs during the test unless asked for.
    with shmbridge.Producer(
        slot_count=2, slot_size=4096, path=path, reap_interval=3600
    ) as producer:
        name = producer.serve()
        with open(path, "r+b") as segment:
            segment.seek(LAYOUT_VERSION_OFFSET)
            assert int.from_bytes(segment.read(4), "little") == shmbridge.LAYOUT_VERSION
            segment.seek(LAYOUT_VERSION_OFFSET)
            segment.write((shmbridge.LAYOUT_VERSION + 1).to_bytes(4, "little"))
        with pytest.raises(shmbridge.VersionMismatch, match="layout version 3, expected 2"):
            shmbridge.Consumer.connect(name)
        # The producer's reaper writes its validated header back; then attaching works again.
        producer.reap()
        assert producer.stats()["header_repairs"] == 1
        with shmbridge.Consumer.connect(name) as consumer:
            assert consumer.redeem(producer.publish(b"after repair")) == b"after repair"
    assert not path.exists()


def test_a_segment_file_that_exists_is_not_overwritten(tmp_path):
    path = tmp_path / "segment"
    path.write_bytes(b"someone else's")
    with pytest.raises(shmbridge.Error, match="failed"):
        shmbridge.Producer(slot_count=1, slot_size=64, path=str(path))
    assert path.read_bytes() == b"someone else's"


CHILD_CONSUMER = """
import sys, shmbridge
consumer = shmbridge.Consumer.connect(sys.argv[1])
handles = [consumer.request_handle(1, seed) for seed in range(3)]
print(" ".join(str(handle) for handle in handles), flush=True)
sys.stdin.read()
"""


def test_a_consumer_killed_holding_publications_leaves_no_slot_held(producer):
    name = producer.serve(payload)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_CONSUMER, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        handles = [shmbridge.Handle.parse(text) for text in child.stdout.readline().split()]
        assert [handle.len for handle in handles] == [8, 8, 8]
        assert producer.stats()["slots"]["ready"] == 3
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
        child.wait(10)
        child.stdin.close()
        child.stdout.close()
    deadline = time.monotonic() + 5
    while producer.stats()["slots"]["ready"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert producer.stats()["slots"] == {
        "free": 8, "writing": 0, "ready": 0, "reading": 0, "unknown": 0,
    }  # fmt: skip
    assert producer.stats()["withdrawn"] == 3


# users_service.py with the real package: the wiring the other tests check against a stand-in.


@pytest.fixture
def users_service():
    started = []

    def start(*flags):
        env = {
            k: v
            for k, v in os.environ.items()
            if k != "PYTHONPATH" and not k.startswith("SHMBRIDGE_")
        }
        process = subprocess.Popen(
            [sys.executable, os.path.join(EXAMPLES, "users_service.py"), "--listen",
             "127.0.0.1:0", "--slot-count", "4", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        started.append(process)
        line = process.stdout.readline().decode()
        assert line.startswith("listening on 127.0.0.1:"), (line, process.stderr.read())
        return process, int(line.rsplit(":", 1)[1])

    yield start
    for process in started:
        process.kill()
        process.wait(10)
        process.stdout.close()
        process.stderr.close()


def _http(port, method, path):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_users_service_publishes_the_seed_payload_over_the_channel_and_http(users_service):
    process, port = users_service("--http-signal")
    status, body = _http(port, "GET", "/shm/segment")
    assert status == 200
    segment = json.loads(body)
    assert segment["layout_version"] == shmbridge.LAYOUT_VERSION
    assert segment["socket"] == f"shmbridge-users-{process.pid}-{segment['epoch']}"
    with shmbridge.Consumer.connect(segment["socket"]) as consumer:
        assert f"{consumer.epoch:016x}" == segment["epoch"]
        body = consumer.request(DEFAULT_COUNT, DEFAULT_SEED)
        assert (len(body), zlib.crc32(body)) == (SEED_PAYLOAD_LEN, SEED_PAYLOAD_CRC)
        assert consumer.request(17, 5) == users_json(17, 5)
        # A count the service refuses is a bad request, not a crash of its channel.
        with pytest.raises(shmbridge.Error, match="bad request"):
            consumer.request(10_001, 0)
        status, text = _http(port, "POST", "/shm/users?count=50&seed=7")
        assert status == 200
        assert consumer.redeem(text.decode()) == users_json(50, 7)
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0


def test_users_service_refuses_a_bad_geometry_with_the_rust_message(users_service):
    refused = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "users_service.py"), "--listen", "127.0.0.1:0",
         "--slot-size", "1000"],
        capture_output=True, check=False, timeout=10,
    )  # fmt: skip
    assert (refused.returncode, refused.stdout) == (1, b"")
    assert refused.stderr == (
        b"error: invalid shared-memory settings: invalid segment configuration: slot size must be "
        b"a positive multiple of 64, at most 1 GiB\n"
    )
