"""The Python users dataset (server/python/users_dataset.py) against the Rust one: sizes and
crc32s obtained from the Rust users-service (`GET /users?count=N&seed=S`), so any drift in the
ChaCha8 port, the draw order, the word lists or the JSON formatting fails here."""

import json
import os
import sys
import zlib

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import users_dataset  # noqa: E402
from users_dataset import ChaCha8, users, users_json  # noqa: E402

U64_MAX = (1 << 64) - 1

# (count, seed) -> (bytes, crc32) as served by the Rust users-service (server/src/dataset.rs).
RUST_BODIES = {
    (1, 0): (377, 0xD17FBD67),
    (17, 5): (6177, 0x342FD311),
    (50, 7): (18162, 0x5B553E30),
    # A seed above 2^32 reaches the second key word.
    (300, 1 << 32): (108323, 0xC9D2E831),
    (123, U64_MAX): (44434, 0x22C2A91B),
    # Several refills of the generator's block buffer.
    (2000, 1): (725873, 0x4083193F),
}

FIRST_DEFAULT_USER = (
    '{"id":1,"first_name":"James","last_name":"Hill","email":"james.hill44@example.org",'
    '"phone":"+1-486-555-0127","address":{"street":"1814 Forest Street","city":"Richmond",'
    '"state":"VA","postal_code":"85296","country":"US"},"company":"Globex Labs",'
    '"job_title":"Principal Data Engineer","created_at":"2021-09-20T02:00:40Z",'
    '"tags":["referral"]}'
)


def test_default_body_is_the_seed_payload_with_the_pinned_crc():
    body = users_json()
    assert (users_dataset.DEFAULT_COUNT, users_dataset.DEFAULT_SEED) == (708, 28)
    assert len(body) == users_dataset.SEED_REPORT_PAYLOAD_BYTES == 256_873
    assert f"{zlib.crc32(body):08x}" == "5c2a5546"


@pytest.mark.parametrize(("count", "seed"), sorted(RUST_BODIES))
def test_bodies_match_the_rust_service(count, seed):
    body = users_json(count, seed)
    assert (len(body), zlib.crc32(body)) == RUST_BODIES[(count, seed)]


def test_max_count_body_matches_the_rust_service():
    body = users_json(users_dataset.MAX_COUNT, 28)
    assert (len(body), f"{zlib.crc32(body):08x}") == (3_633_046, "ac5f2dff")


def test_first_user_of_the_default_seed_is_pinned():
    assert users_json(1, 28) == f"[{FIRST_DEFAULT_USER}]".encode()


def test_zero_users_is_an_empty_array():
    assert users_json(0, 28) == b"[]"
    assert users_json(0, 5) == b"[]"


def test_smaller_counts_are_prefixes_of_larger_ones():
    assert users(10, 3) == users(20, 3)[:10]


def test_body_is_an_array_of_count_users_with_sequential_ids():
    parsed = json.loads(users_json(25, 9))
    assert [user["id"] for user in parsed] == list(range(1, 26))
    for user in parsed:
        assert "@example." in user["email"]
        assert 1 <= len(user["tags"]) <= 4
        assert len(set(user["tags"])) == len(user["tags"])


def test_other_seeds_give_other_bodies():
    assert users_json(50, 7) == users_json(50, 7)
    assert users_json(50, 7) != users_json(50, 8)


@pytest.mark.parametrize("blocks", [1, 3, 4, 64, 257])
def test_stream_does_not_depend_on_how_many_blocks_a_refill_computes(blocks):
    expected = ChaCha8.from_u64_seed(99, blocks_per_refill=16).take_u64s(3000)
    rng = ChaCha8.from_u64_seed(99, blocks_per_refill=blocks)
    drawn = [rng.next_u64() for _ in range(1000)] + rng.take_u64s(2000)
    assert drawn == expected


def test_seed_outside_u64_is_refused():
    with pytest.raises(ValueError):
        ChaCha8.from_u64_seed(U64_MAX + 1)
    with pytest.raises(ValueError):
        ChaCha8.from_u64_seed(-1)
