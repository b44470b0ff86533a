"""The native `shmbridge` package against real segments: bytes, crc32s (zlib's, so the same
checksum a Python peer would compute), response heads, tiers and exception types of every path,
in one process and between processes. Needs the package installed (`pip install
./transport/python`)."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib

import pytest

# Not importorskip: without the package these tests must fail, not pass as skipped.
import shmbridge

# The Python users-service and its dataset, beside the Rust users-service they mirror.
SERVICE_DIR = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "server", "python"
)
sys.path.insert(0, SERVICE_DIR)

from users_dataset import DEFAULT_COUNT, DEFAULT_SEED, users_json

# The seed report's payload: what the Rust users-service serves for the defaults.
SEED_PAYLOAD_LEN = 256_873
SEED_PAYLOAD_CRC = 0x5C2A5546
# Byte offset of layout_version in the segment header (transport/src/layout.rs).
LAYOUT_VERSION_OFFSET = 8
SLOT_SIZE = 64 * 1024
INLINE = shmbridge.DEFAULT_INLINE_THRESHOLD


def payload(size: int, seed: int) -> bytes:
    """Deterministic bytes for a handler, different at every offset and for every seed, so that
    a misplaced or truncated chunk of a body shows."""
    return random.Random(seed).randbytes(size)


def ask(size: int, seed: int = 0) -> bytes:
    """The request `sized` answers with `payload(size, seed)`."""
    return f"{size} {seed}".encode()


def sized(request: bytes) -> bytes:
    size, seed = map(int, request.split())
    return payload(size, seed)


@pytest.fixture
def producer():
    with shmbridge.Producer(slot_count=8, slot_size=SLOT_SIZE) as producer:
        yield producer


@pytest.fixture
def served(producer):
    """A producer serving `sized` on its control channel, and a consumer connected to it."""
    with shmbridge.Consumer.connect(producer.serve(sized)) as consumer:
        yield producer, consumer


def wait_for(condition, timeout: float = 5.0) -> bool:
    """Polls `condition` until it holds or `timeout` passes; what it last said."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_exceptions_form_one_hierarchy():
    for name in (
        "AttachError", "Exhausted", "TooLarge", "Busy", "Stale", "ChecksumMismatch", "TimedOut",
        "Closed", "RequestTooLarge", "HandlerFailed", "ControlVersionMismatch",
    ):  # fmt: skip
        assert issubclass(getattr(shmbridge, name), shmbridge.Error), name
    assert issubclass(shmbridge.VersionMismatch, shmbridge.AttachError)
    assert issubclass(shmbridge.Error, Exception)
    assert shmbridge.LAYOUT_VERSION == 2
    assert shmbridge.CONTROL_VERSION == 4
    assert shmbridge.MAX_REQUEST_LEN == 64 * 1024
    assert shmbridge.DEFAULT_INLINE_THRESHOLD == 4 * 1024


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
    with pytest.raises(shmbridge.TooLarge, match="larger than the 65536 bytes allowed"):
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


def test_a_handler_returning_bytes_answers_200_with_them(served):
    producer, consumer = served
    for size, seed in [(3, 1), (100, 2**64 - 1), (0, 5)]:
        response = consumer.request(ask(size, seed))
        assert isinstance(response, shmbridge.Response)
        assert response.body == payload(size, seed)
        assert (response.status, response.content_type, response.headers) == (200, "", [])
        assert response.tier == "inline"
    # Nothing left waiting, and no slot was used for an inline body.
    assert producer.stats()["slots"]["free"] == 8
    assert producer.socket_name.startswith(f"shmbridge-py-{os.getpid()}-{producer.epoch:016x}")


def test_a_handler_gets_the_request_bytes_exactly(producer):
    seen = []

    def record(request):
        seen.append(request)
        return request[::-1]

    request = bytes(range(256)) * 4 + b"\r\n\0"
    with shmbridge.Consumer.connect(producer.serve(record)) as consumer:
        assert consumer.request(request).body == request[::-1]
        assert consumer.request(b"").body == b""
    assert seen == [request, b""]
    assert all(type(request) is bytes for request in seen)


def test_a_handler_returning_a_response_sets_status_content_type_and_headers(producer):
    headers = [("x-request-id", "7"), ("Retry-After", "1"), ("x-empty", ""), ("x-request-id", "8")]

    def not_found(request):
        return shmbridge.Response(
            status=404,
            body=b'{"error":"no such user"}',
            content_type="application/json",
            headers=headers,
        )

    with shmbridge.Consumer.connect(producer.serve(not_found)) as consumer:
        response = consumer.request(b"GET /users/9")
    assert response.status == 404
    assert response.content_type == "application/json"
    # In order, names as given, repeats kept.
    assert response.headers == headers
    assert response.body == b'{"error":"no such user"}'
    assert response.tier == "inline"


def test_a_response_has_the_defaults_of_a_plain_body():
    response = shmbridge.Response()
    assert (response.status, response.body, response.content_type, response.headers) == (
        200, b"", "", [],
    )  # fmt: skip
    assert response.tier is None
    made = shmbridge.Response(201, b"x", "text/plain", [("a", "b")])
    assert (made.status, made.body, made.content_type, made.headers) == (
        201, b"x", "text/plain", [("a", "b")],
    )  # fmt: skip
    assert "status=201" in repr(made)


@pytest.mark.parametrize(
    "bad",
    [
        {"status": 99},
        {"status": 1000},
        {"content_type": "text/plain\r\nx-evil: 1"},
        {"headers": [("bad name", "v")]},
        {"headers": [("", "v")]},
        {"headers": [("x", "a\r\nset-cookie: evil")]},
        {"headers": [("x", "é")]},
        {"headers": [("x", "v")] * 65},
        {"headers": [("x-filler", "v" * 4096)] * 4},
    ],
    ids=lambda bad: next(iter(bad)),
)
def test_a_head_http_cannot_carry_is_a_value_error_where_it_is_made(bad):
    with pytest.raises(ValueError):
        shmbridge.Response(**bad)


def test_a_response_body_must_be_bytes():
    with pytest.raises(TypeError):
        shmbridge.Response(body="text")
    with pytest.raises(TypeError):
        shmbridge.Response(body=bytearray(b"mutable"))
    with pytest.raises(OverflowError):
        shmbridge.Response(status=-1)


# Each tier's bounds for a 64 KiB slot and the default 4 KiB inline threshold; sealed bodies
# go well past a slot.
TIERS = [
    (0, "inline"),
    (1, "inline"),
    (INLINE, "inline"),
    (INLINE + 1, "slot"),
    (SLOT_SIZE, "slot"),
    (SLOT_SIZE + 1, "sealed"),
    (3_000_000, "sealed"),
]


@pytest.mark.parametrize(("size", "tier"), TIERS, ids=[f"{s}-{t}" for s, t in TIERS])
def test_bodies_of_every_tier_arrive_byte_exact(served, size, tier):
    producer, consumer = served
    response = consumer.request(ask(size, size), timeout=10)
    assert response.tier == tier
    assert len(response.body) == size
    assert zlib.crc32(response.body) == zlib.crc32(payload(size, size))
    assert response.body == payload(size, size)
    stats = producer.stats()
    assert stats["sealed_publications"] == (1 if tier == "sealed" else 0)
    # Redeemed: the slot is back, no sealed bytes are held.
    assert stats["slots"]["free"] == 8
    assert stats["sealed_bytes_in_flight"] == 0


@pytest.mark.parametrize(("size", "tier"), [(10, "inline"), (20_000, "slot"), (70_000, "sealed")])
def test_a_responses_head_travels_with_a_body_of_every_tier(producer, size, tier):
    def made(request):
        return shmbridge.Response(
            status=206, body=payload(size, 3), content_type="application/octet-stream",
            headers=[("x-size", str(size))],
        )  # fmt: skip

    with shmbridge.Consumer.connect(producer.serve(made)) as consumer:
        response = consumer.request(b"")
    assert (response.status, response.content_type, response.headers, response.tier) == (
        206, "application/octet-stream", [("x-size", str(size))], tier,
    )  # fmt: skip
    assert response.body == payload(size, 3)


@pytest.mark.parametrize("size", [10, 20_000, 70_000])
def test_a_kept_body_travels_sealed_at_every_size_and_is_the_same_memfd_each_time(producer, size):
    kept = shmbridge.KeptBody(payload(size, 4))
    assert (len(kept), kept.crc) == (size, zlib.crc32(payload(size, 4)))
    head = shmbridge.Response(status=203, content_type="application/octet-stream")

    with shmbridge.Consumer.connect(producer.serve(lambda request: (head, kept))) as consumer:
        for _ in range(3):
            response = consumer.request(b"")
            assert (response.status, response.content_type, response.tier) == (
                203, "application/octet-stream", "sealed",
            )  # fmt: skip
            assert response.body == payload(size, 4)
    stats = producer.stats()
    assert stats["sealed_publications"] == 3
    assert wait_for(lambda: producer.stats()["sealed_bytes_in_flight"] == 0)


def test_a_kept_bodys_head_must_not_carry_a_body_of_its_own(producer, monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: reported.append(unraisable))

    def made(request):
        return (shmbridge.Response(body=b"x"), shmbridge.KeptBody(b"y"))

    with shmbridge.Consumer.connect(producer.serve(made)) as consumer:
        with pytest.raises(shmbridge.HandlerFailed):
            consumer.request(b"")
    assert [type(unraisable.exc_value) for unraisable in reported] == [TypeError]


def test_an_answer_names_the_object_version_until_its_key_is_invalidated(producer):
    data = {"revision": 1}

    def handler(request):
        if request == b"change-during":
            # The data changes while the answer is being made: it must name no version.
            producer.invalidate(7)
        return f"revision {data['revision']}".encode()

    def object_key(request):
        return None if request == b"anonymous" else 7

    name = producer.serve(handler, object_key=object_key)
    with shmbridge.Consumer.connect(name) as consumer:
        first = consumer.request(b"a")
        assert first.object is not None and first.object[0] == 7
        assert consumer.request(b"anonymous").object is None
        data["revision"] = 2
        producer.invalidate(7)
        second = consumer.request(b"a")
        assert second.body == b"revision 2"
        assert second.object[0] == 7 and second.object[1] != first.object[1]
        assert consumer.request(b"change-during").object is None
    assert shmbridge.Response(body=b"x").object is None


def test_object_key_must_be_callable_and_come_with_a_handler(producer):
    with pytest.raises(TypeError, match="object_key must be callable"):
        producer.serve(sized, object_key=7)
    with pytest.raises(TypeError, match="object_key needs a handler"):
        producer.serve(object_key=lambda request: 1)


def test_the_inline_threshold_is_the_producers_to_set():
    with shmbridge.Producer(slot_count=4, slot_size=4096) as producer:
        name = producer.serve(sized, inline_threshold=100)
        with shmbridge.Consumer.connect(name) as consumer:
            assert consumer.request(ask(100)).tier == "inline"
            assert consumer.request(ask(101)).tier == "slot"
            assert consumer.request(ask(4097)).tier == "sealed"
    with shmbridge.Producer(slot_count=1, slot_size=64) as producer:
        with pytest.raises(ValueError, match="inline_threshold"):
            producer.serve(sized, inline_threshold=64 * 1024 + 1)


def test_the_users_dataset_over_the_channel_is_the_seed_payload():
    def users(request):
        count, seed = map(int, request.split())
        return users_json(count, seed)

    with shmbridge.Producer(slot_count=4) as producer:
        consumer = shmbridge.Consumer.connect(producer.serve(users))
        response = consumer.request(f"{DEFAULT_COUNT} {DEFAULT_SEED}".encode())
        assert (len(response.body), zlib.crc32(response.body)) == (
            SEED_PAYLOAD_LEN, SEED_PAYLOAD_CRC,
        )  # fmt: skip
        # Larger than the inline threshold, within the default 512 KiB slot.
        assert response.tier == "slot"
        consumer.close()


def test_a_raising_handler_fails_only_its_request_with_handler_failed(producer, monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: reported.append(unraisable))

    def handler(request):
        if request == b"bug":
            raise RuntimeError("handler bug")
        if request == b"refuse":
            raise ValueError("not served")
        if request == b"str":
            return "not bytes"
        if request == b"big-then-raise":
            raise KeyError("after deciding on a big body")
        return sized(request)

    with shmbridge.Consumer.connect(producer.serve(handler)) as consumer:
        for request in (b"bug", b"refuse", b"str", b"big-then-raise"):
            with pytest.raises(shmbridge.HandlerFailed, match="handler failed") as failed:
                consumer.request(request)
            assert type(failed.value) is shmbridge.HandlerFailed
            # The connection serves on.
            assert consumer.request(ask(4, 9)).body == payload(4, 9)
        assert consumer.request(ask(SLOT_SIZE + 1, 1)).body == payload(SLOT_SIZE + 1, 1)
    assert [type(unraisable.exc_value) for unraisable in reported] == [
        RuntimeError, ValueError, TypeError, KeyError,
    ]  # fmt: skip
    assert "iterable of bytes) pair, not str" in str(reported[2].exc_value)
    stats = producer.stats()
    assert stats["slots"]["free"] == 8
    assert stats["sealed_bytes_in_flight"] == 0


def test_a_request_above_64_kib_is_refused_with_request_too_large(served):
    producer, consumer = served
    with pytest.raises(shmbridge.RequestTooLarge, match="65537 bytes is above"):
        consumer.request(bytes(shmbridge.MAX_REQUEST_LEN + 1))
    with pytest.raises(shmbridge.RequestTooLarge):
        consumer.request_publication(bytes(10 * shmbridge.MAX_REQUEST_LEN))
    # The bound itself is carried, and the connection still serves.
    largest = b"1 7" + b" " * (shmbridge.MAX_REQUEST_LEN - 3)
    assert consumer.request(largest).body == payload(1, 7)
    assert consumer.is_open


def test_a_body_above_the_producers_largest_is_too_large():
    largest = 64 * 1024 * 1024
    with shmbridge.Producer(slot_count=2, slot_size=4096) as producer:
        name = producer.serve(lambda request: bytes(largest + int(request)))
        with shmbridge.Consumer.connect(name) as consumer:
            with pytest.raises(shmbridge.TooLarge, match=f"the limit is {largest} bytes"):
                consumer.request(b"1", timeout=10)
            response = consumer.request(b"0", timeout=30)
            assert (response.tier, len(response.body)) == ("sealed", largest)
            assert response.body == bytes(largest)
        assert producer.stats()["sealed_bytes_in_flight"] == 0


def test_a_publication_can_be_held_redeemed_once_or_released(served):
    producer, consumer = served
    inline = consumer.request_publication(ask(5, 1))
    assert (inline.status, inline.tier, inline.len, inline.handle) == (200, "inline", 5, None)
    slot = consumer.request_publication(ask(INLINE + 10, 2))
    assert (slot.tier, slot.len) == ("slot", INLINE + 10)
    assert (slot.handle.epoch, slot.handle.len) == (producer.epoch, INLINE + 10)
    assert slot.handle.crc == zlib.crc32(payload(INLINE + 10, 2))
    assert producer.stats()["slots"]["ready"] == 1
    assert inline.redeem().body == payload(5, 1)
    response = slot.redeem()
    assert (response.tier, response.body) == ("slot", payload(INLINE + 10, 2))
    with pytest.raises(shmbridge.Stale, match="redeemed or released"):
        slot.redeem()
    released = consumer.request_publication(ask(INLINE + 10, 3))
    released.release()
    released.release()
    with pytest.raises(shmbridge.Stale):
        released.redeem()
    # The release frame frees the slot at once, not at the TTL.
    assert wait_for(lambda: producer.stats()["slots"]["free"] == 8)
    assert "spent" in repr(released)


def test_a_sealed_body_travels_with_its_descriptor_and_a_release_gives_it_back(served):
    producer, consumer = served
    size = SLOT_SIZE + 1
    assert consumer.request(ask(size, 1)).body == payload(size, 1)
    stats = producer.stats()
    assert (stats["sealed_publications"], stats["sealed_bytes_in_flight"]) == (1, 0)
    held = consumer.request_publication(ask(size, 2))
    assert (held.tier, held.len, held.handle.len) == ("sealed", size, size)
    assert producer.stats()["sealed_bytes_in_flight"] == size
    held.release()
    assert wait_for(lambda: producer.stats()["sealed_bytes_in_flight"] == 0)
    # Dropping one unredeemed gives it back too.
    consumer.request_publication(ask(size, 3))
    assert wait_for(lambda: producer.stats()["sealed_bytes_in_flight"] == 0)


def test_the_per_peer_limit_answers_busy(producer):
    # Inline bodies hold nothing; a threshold of 0 sends every body through a slot.
    name = producer.serve(sized, max_unredeemed_per_peer=2, max_unredeemed=8, inline_threshold=0)
    with shmbridge.Consumer.connect(name) as consumer:
        first = consumer.request_publication(ask(1, 1))
        second = consumer.request_publication(ask(1, 2))
        with pytest.raises(shmbridge.Busy, match="limit 2"):
            consumer.request_publication(ask(1, 3))
        # Redeeming one makes room again; another connection has its own allowance.
        assert first.redeem().body == payload(1, 1)
        assert consumer.request(ask(1, 4)).body == payload(1, 4)
        with shmbridge.Consumer.connect(name) as other:
            assert other.request(ask(1, 5)).body == payload(1, 5)
        # By its handle, as another process attached to the segment could.
        assert consumer.redeem(second.handle) == payload(1, 2)


def test_closing_a_consumer_withdraws_its_unredeemed_publications(producer):
    name = producer.serve(sized, inline_threshold=0)
    consumer = shmbridge.Consumer.connect(name)
    held = [consumer.request_publication(ask(1, seed)) for seed in range(3)]
    assert producer.stats()["slots"]["ready"] == 3
    consumer.close()
    # The producer withdraws them when it sees the connection close: wait for that, bounded.
    assert wait_for(lambda: producer.stats()["withdrawn"] == 3)
    with shmbridge.Consumer.connect(name) as late, pytest.raises(shmbridge.Stale):
        late.redeem(held[0].handle)
    with pytest.raises(shmbridge.Stale):
        held[1].redeem()


def test_a_request_waits_for_a_free_slot_until_its_deadline():
    with shmbridge.Producer(slot_count=2, slot_size=4096) as producer:
        name = producer.serve(
            sized, max_unredeemed_per_peer=4, max_unredeemed=4, inline_threshold=0
        )
        with shmbridge.Consumer.connect(name) as consumer:
            held = [consumer.request_publication(ask(1, seed)) for seed in range(2)]
            # No slot comes free: the producer waits until the request's deadline, then
            # refuses (Exhausted), which the consumer, giving up at that same moment, may see
            # first as its own timeout.
            started = time.monotonic()
            with pytest.raises((shmbridge.Exhausted, shmbridge.TimedOut)):
                consumer.request(ask(1, 3), timeout=0.3)
            assert 0.25 < time.monotonic() - started < 2
            # A slot freed while a request waits is taken by it.
            threading.Timer(0.2, held[0].release).start()
            assert consumer.request(ask(1, 4), timeout=5).body == payload(1, 4)
            assert consumer.is_open


def test_a_slow_handler_times_the_request_out_without_holding_the_gil(producer):
    entered, release = threading.Event(), threading.Event()

    def slow(request):
        entered.set()
        release.wait(10)
        return sized(request)

    with shmbridge.Consumer.connect(producer.serve(slow)) as consumer:
        with pytest.raises(shmbridge.TimedOut, match="no answer within"):
            consumer.request(ask(1, 1), timeout=1.0)
        # The handler ran on the producer's channel thread while this thread waited in
        # `request`: had it kept the GIL, the handler could only start after it returned.
        assert entered.is_set()
        release.set()
        assert consumer.request(ask(1, 2)).body == payload(1, 2)


def test_the_http_over_shm_convention_round_trips_and_refuses_what_it_cannot_carry():
    encoded = shmbridge.http_request_encode(
        "POST", "/blobs?size=3", [("accept", "application/json"), ("x-empty", "")], b"\r\nbody"
    )
    assert encoded == (
        b"POST /blobs?size=3\r\naccept: application/json\r\nx-empty: \r\n\r\n\r\nbody"
    )
    assert shmbridge.http_request_parse(encoded) == (
        "POST", "/blobs?size=3", [("accept", "application/json"), ("x-empty", "")], b"\r\nbody",
    )  # fmt: skip
    assert shmbridge.http_request_encode("GET", "/users") == b"GET /users\r\n\r\n"
    for request in (b"", b"GET /users", b"GET users\r\n\r\n", b"GET /a b\r\n\r\n",
                    b"GET /\r\nbad header\r\n\r\n"):  # fmt: skip
        with pytest.raises(ValueError):
            shmbridge.http_request_parse(request)
    with pytest.raises(ValueError):
        shmbridge.http_request_encode("GET", "no-slash")
    with pytest.raises(ValueError):
        shmbridge.http_request_encode("G T", "/")
    with pytest.raises(ValueError):
        shmbridge.http_request_encode("GET", "/", [("x", "a\r\nb")])


def test_a_closed_producer_or_consumer_raises_closed(producer):
    consumer = shmbridge.Consumer.connect(producer.serve(sized))
    producer.close()
    producer.close()
    with pytest.raises(shmbridge.Closed):
        producer.publish(b"late")
    with pytest.raises(shmbridge.Closed):
        consumer.request(ask(1, 1))
    consumer.close()
    with pytest.raises(shmbridge.Closed):
        consumer.redeem("0000000000000001-0-1-0-00000000")


def test_a_socket_name_in_use_is_refused(producer):
    name = producer.serve(sized)
    with pytest.raises(shmbridge.Error, match="already serving"):
        producer.serve(sized)
    with shmbridge.Producer(slot_count=1, slot_size=64) as other:
        with pytest.raises(shmbridge.Error, match=f"@{name}"):
            other.serve(sized, name)
        assert other.socket_name is None
        with pytest.raises(TypeError, match="callable"):
            other.serve(b"not a handler")


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
held = [consumer.request_publication(f"8 {seed}".encode()) for seed in range(3)]
print(" ".join(str(publication.handle) for publication in held), flush=True)
sys.stdin.read()
"""


def test_a_consumer_killed_holding_publications_leaves_no_slot_held(producer):
    name = producer.serve(sized, inline_threshold=0)
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
    assert wait_for(lambda: producer.stats()["slots"]["ready"] == 0)
    assert producer.stats()["slots"] == {
        "free": 8, "writing": 0, "ready": 0, "reading": 0, "unknown": 0,
    }  # fmt: skip
    assert producer.stats()["withdrawn"] == 3


# server/python/users_service.py with the real package: the wiring its own tests
# (server/python/tests/test_users_service.py) check against a stand-in.


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
            [sys.executable, os.path.join(SERVICE_DIR, "users_service.py"), "--listen",
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
    """``(status, [(name, value), ...], body)`` of one HTTP request to the service."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        headers = [(name.lower(), value) for name, value in response.getheaders()]
        return response.status, headers, response.read()
    finally:
        connection.close()


# Requests whose answers do not change between two asks (POST /shm/users publishes anew each
# time), with the tier each body takes over shm (4 slots of 512 KiB, 4 KiB inline).
SAME_OVER_SHM_AND_HTTP = [
    ("GET", "/users", "slot"),
    ("GET", "/users?count=8&seed=5", "inline"),
    ("GET", "/users?count=50&seed=7", "slot"),
    ("GET", "/users?count=2000&seed=1", "sealed"),
    ("GET", "/users?count=0", "inline"),
    ("GET", "/users?count=10001", "inline"),
    ("GET", "/users?count=abc&seed=1", "inline"),
    ("GET", "/users?limit=3", "inline"),
    ("HEAD", "/users?count=5", "inline"),
    ("GET", "/healthz", "inline"),
    ("GET", "/readyz", "inline"),
    ("GET", "/shm/segment", "inline"),
    ("GET", "/nope", "inline"),
    ("POST", "/users", "inline"),
    ("GET", "/shm/users", "inline"),
]


def test_users_service_answers_every_route_over_the_channel_as_over_http(users_service):
    process, port = users_service("--http-signal")
    status, _, body = _http(port, "GET", "/shm/segment")
    assert status == 200
    segment = json.loads(body)
    assert segment["layout_version"] == shmbridge.LAYOUT_VERSION
    assert segment["socket"] == f"shmbridge-users-{process.pid}-{segment['epoch']}"
    with shmbridge.Consumer.connect(segment["socket"]) as consumer:
        assert f"{consumer.epoch:016x}" == segment["epoch"]
        for method, target, tier in SAME_OVER_SHM_AND_HTTP:
            status, headers, body = _http(port, method, target)
            response = consumer.request(shmbridge.http_request_encode(method, target), timeout=10)
            where = f"{method} {target}"
            assert (response.status, response.body) == (status, body), where
            assert response.content_type == dict(headers).get("content-type", ""), where
            # The rest of the head, less HTTP's framing and the carrier's x-transport.
            framing = {"content-type", "content-length", "date", "x-transport"}
            assert response.headers == [h for h in headers if h[0] not in framing], where
            assert response.tier == tier, where
        seed = consumer.request(shmbridge.http_request_encode("GET", "/users"))
        assert (len(seed.body), zlib.crc32(seed.body)) == (SEED_PAYLOAD_LEN, SEED_PAYLOAD_CRC)
        assert seed.headers == [("x-payload-crc32", f"{SEED_PAYLOAD_CRC:08x}")]
        assert seed.content_type == "application/json"
        refused = consumer.request(shmbridge.http_request_encode("GET", "/users?count=10001"))
        assert (refused.status, json.loads(refused.body)["code"]) == (400, "bad_query")
        # Bytes that are no HTTP request fail that request, as in the Rust users-service.
        with pytest.raises(shmbridge.HandlerFailed):
            consumer.request(b"\x00 not a request")
        # The seed's way still works beside it.
        status, _, text = _http(port, "POST", "/shm/users?count=50&seed=7")
        assert status == 200
        assert consumer.redeem(text.decode()) == users_json(50, 7)
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0


def test_users_service_refuses_a_bad_geometry_with_the_rust_message(users_service):
    refused = subprocess.run(
        [sys.executable, os.path.join(SERVICE_DIR, "users_service.py"), "--listen", "127.0.0.1:0",
         "--slot-size", "1000"],
        capture_output=True, check=False, timeout=10,
    )  # fmt: skip
    assert (refused.returncode, refused.stdout) == (1, b"")
    assert refused.stderr == (
        b"error: invalid shared-memory settings: invalid segment configuration: slot size must be "
        b"a positive multiple of 64, at most 1 GiB\n"
    )
