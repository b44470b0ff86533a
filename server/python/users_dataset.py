"""The deterministic users dataset, ported from server/src/dataset.rs to standard-library Python
(server/python/users_service.py serves it; server/python/tests/test_dataset.py checks it
against the Rust users-service's bodies).

The same ``(count, seed)`` gives byte-for-byte the same JSON as the Rust users-service, so a
Python producer and a Rust one are interchangeable behind the gateway, and a checker knows the
exact expected body (and crc32) of any response.
"""

# Design notes for maintainers:
# - The Rust side draws from rand_chacha's ChaCha8Rng seeded with the 32 bytes
#   `seed.to_le_bytes() ++ [0; 24]`: the standard ChaCha block function with 8 rounds, key words
#   4..11 from the seed, a 64-bit block counter in words 12-13 starting at 0, stream words 14-15
#   zero. rand_chacha buffers 4 blocks (64 u32 words) and `next_u64` takes two consecutive words
#   (low, high); only `next_u64` is used and the index starts at 0, so a u64 never straddles a
#   buffer, and the stream is just the 16 words of block 0, then block 1, ... taken in pairs.
# - Speed: one block at a time costs ~30 us a block in CPython and the default body needs
#   ~500 blocks. Here many blocks are computed at once instead: each of the 16 state words of B
#   blocks is packed into one big integer with a 64-bit lane per block (the value in the low 32
#   bits of its lane). Adding two lanes gives at most 33 bits and a rotation's spill lands in
#   the upper, masked-off half of a lane, so one big-integer add/xor/rotate does the step for
#   all B blocks. The u64 outputs come straight out of the lanes: word 2k | word 2k+1 << 32 is
#   the k-th u64 of each block.
# - `between` is `low + next_u64 % (high - low + 1)` and `pick` is `between(0, len - 1)`, as in
#   Rust; the order of the draws below is the Rust code's order, field by field. Reordering any
#   draw changes every later user, and the crc tests catch it.
# - Serialization is `json.dumps` with compact separators, which for these values (ASCII
#   strings without quotes or backslashes, small non-negative integers, dicts in insertion
#   order) is exactly serde_json's compact output of the Rust structs in field order.

import json
import sys
from array import array

SEED_REPORT_PAYLOAD_BYTES = 256_873
"""The payload size the seed report measured, which ``DEFAULT_COUNT`` users reach exactly."""

DEFAULT_SEED = 28
"""The seed used when a request names none (as in the Rust service)."""

DEFAULT_COUNT = 708
"""The user count whose body with ``DEFAULT_SEED`` is exactly 256,873 bytes."""

MAX_COUNT = 10_000
"""The largest ``count`` a request may ask for (about 3.7 MB of JSON)."""

U64_MAX = (1 << 64) - 1

FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "James", "Isabella", "William",
    "Mia", "Benjamin", "Charlotte", "Lucas", "Amelia", "Henry", "Harper", "Theodore", "Evelyn",
    "Jack", "Abigail", "Levi", "Emily", "Alexander", "Ella", "Jackson", "Elizabeth", "Mateo",
    "Camila", "Daniel", "Luna", "Michael", "Sofia", "Mason", "Avery", "Sebastian", "Mila",
    "Ethan", "Aria", "Logan", "Scarlett", "Owen", "Penelope", "Samuel", "Layla", "Jacob",
    "Chloe", "Asher", "Victoria", "Aiden",
)  # fmt: skip

LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
)  # fmt: skip

EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

STREET_NAMES = (
    "Maple", "Oak", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Main",
    "Sunset", "Ridge", "Willow", "Highland", "River", "Church", "Spring", "Meadow", "Forest",
    "Lincoln",
)  # fmt: skip

STREET_KINDS = ("Street", "Avenue", "Road", "Lane", "Drive", "Court", "Boulevard")

# (city, state) pairs, so a city is never placed in the wrong state.
CITIES = (
    ("Springfield", "IL"), ("Portland", "OR"), ("Austin", "TX"), ("Denver", "CO"),
    ("Madison", "WI"), ("Raleigh", "NC"), ("Boise", "ID"), ("Columbus", "OH"), ("Albany", "NY"),
    ("Sacramento", "CA"), ("Tucson", "AZ"), ("Richmond", "VA"), ("Omaha", "NE"),
    ("Burlington", "VT"), ("Savannah", "GA"), ("Spokane", "WA"),
)  # fmt: skip

COMPANY_STEMS = (
    "Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Acme", "Hooli",
    "Vandelay", "Soylent", "Tyrell", "Cyberdyne", "Wonka", "Gringotts", "Oscorp",
)  # fmt: skip

COMPANY_KINDS = (
    "Analytics", "Systems", "Logistics", "Labs", "Holdings", "Software", "Dynamics", "Foods",
    "Energy", "Consulting",
)  # fmt: skip

JOB_LEVELS = ("Junior", "", "Senior", "Staff", "Principal", "Lead")

JOB_ROLES = (
    "Software Engineer", "Data Engineer", "Product Manager", "Designer", "Accountant",
    "Sales Representative", "Support Specialist", "Site Reliability Engineer", "Data Scientist",
    "Recruiter", "Technical Writer", "Security Analyst",
)  # fmt: skip

TAGS = (
    "premium", "beta-tester", "newsletter", "early-adopter", "enterprise", "trial", "vip",
    "referral", "mobile", "inactive",
)  # fmt: skip

_TAG_POSITION = {tag: position for position, tag in enumerate(TAGS)}

_MASK32 = 0xFFFF_FFFF
# "expand 32-byte k" as four little-endian words.
_CONSTANTS = (0x6170_7865, 0x3320_646E, 0x7962_2D32, 0x6B20_6574)
_DOUBLE_ROUNDS = 4  # ChaCha8: 8 rounds


class ChaCha8:
    """rand_chacha's ``ChaCha8Rng::from_seed(key)`` restricted to ``next_u64``.

    ``blocks_per_refill`` blocks are computed per refill (see the design notes); any value
    gives the same stream, larger ones amortize the per-operation cost better.
    """

    def __init__(self, key: bytes, blocks_per_refill: int = 64) -> None:
        if len(key) != 32:
            raise ValueError(f"a ChaCha key is 32 bytes, got {len(key)}")
        if blocks_per_refill < 1:
            raise ValueError("blocks_per_refill must be at least 1")
        key_words = [int.from_bytes(key[at : at + 4], "little") for at in range(0, 32, 4)]
        self._blocks = blocks_per_refill
        self._counter = 0
        self._buffer: list = []
        self._index = 0
        # The lane mask and the constants/key words repeated in every 64-bit lane.
        lanes = _pack_lanes([1] * blocks_per_refill)
        self._lane_mask = lanes * _MASK32
        self._fixed = [word * lanes for word in (*_CONSTANTS, *key_words)]

    @classmethod
    def from_u64_seed(cls, seed: int, blocks_per_refill: int = 64) -> "ChaCha8":
        """The generator dataset.rs builds: ``seed.to_le_bytes()`` padded with zeros to 32 bytes."""
        if not 0 <= seed <= U64_MAX:
            raise ValueError(f"seed must be in 0..=2^64-1, got {seed}")
        return cls(seed.to_bytes(8, "little") + bytes(24), blocks_per_refill)

    def next_u64(self) -> int:
        if self._index == len(self._buffer):
            self._refill()
        value = self._buffer[self._index]
        self._index += 1
        return value

    def take_u64s(self, wanted: int) -> list:
        """The next ``wanted`` u64 outputs, as ``next_u64`` would give them one by one."""
        out = []
        while len(out) < wanted:
            if self._index == len(self._buffer):
                self._refill()
            end = min(len(self._buffer), self._index + wanted - len(out))
            out.extend(self._buffer[self._index : end])
            self._index = end
        return out

    def _refill(self) -> None:
        self._buffer = self._blocks_u64(self._counter)
        self._index = 0
        self._counter += self._blocks

    def _blocks_u64(self, first_counter: int) -> list:
        """The u64 outputs of blocks ``first_counter .. first_counter + blocks``, in order."""
        blocks = self._blocks
        mask = self._lane_mask
        counters = range(first_counter, first_counter + blocks)
        # Words 12 and 13: the low and high halves of each lane's own 64-bit block counter.
        low = _pack_lanes([counter & _MASK32 for counter in counters])
        high = _pack_lanes([counter >> 32 for counter in counters])
        initial = [*self._fixed, low, high, 0, 0]
        x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = initial
        for _ in range(_DOUBLE_ROUNDS):
            # Column round.
            x0, x4, x8, x12 = _quarter_round(x0, x4, x8, x12, mask)
            x1, x5, x9, x13 = _quarter_round(x1, x5, x9, x13, mask)
            x2, x6, x10, x14 = _quarter_round(x2, x6, x10, x14, mask)
            x3, x7, x11, x15 = _quarter_round(x3, x7, x11, x15, mask)
            # Diagonal round.
            x0, x5, x10, x15 = _quarter_round(x0, x5, x10, x15, mask)
            x1, x6, x11, x12 = _quarter_round(x1, x6, x11, x12, mask)
            x2, x7, x8, x13 = _quarter_round(x2, x7, x8, x13, mask)
            x3, x4, x9, x14 = _quarter_round(x3, x4, x9, x14, mask)
        final = (x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15)
        out = [0] * (8 * blocks)
        width = 8 * blocks
        for k in range(8):
            # The k-th u64 of every block: (word 2k + its input) | (word 2k+1 + its input) << 32.
            lo = (final[2 * k] + initial[2 * k]) & mask
            hi = (final[2 * k + 1] + initial[2 * k + 1]) & mask
            lanes = array("Q", (lo | (hi << 32)).to_bytes(width, "little"))
            if _BIG_ENDIAN:  # pragma: no cover - array("Q") reads native order
                lanes.byteswap()
            out[k::8] = lanes
        return out


_BIG_ENDIAN = sys.byteorder == "big"


def _quarter_round(a: int, b: int, c: int, d: int, mask: int) -> tuple:
    """The ChaCha quarter round on every lane at once (``mask`` keeps the low 32 bits of each
    64-bit lane: it drops an addition's carry and a rotation's spill into the next lane)."""
    a = (a + b) & mask
    d ^= a
    d = ((d << 16) | (d >> 16)) & mask
    c = (c + d) & mask
    b ^= c
    b = ((b << 12) | (b >> 20)) & mask
    a = (a + b) & mask
    d ^= a
    d = ((d << 8) | (d >> 24)) & mask
    c = (c + d) & mask
    b ^= c
    b = ((b << 7) | (b >> 25)) & mask
    return a, b, c, d


def _pack_lanes(values: list) -> int:
    """One big integer holding ``values[i]`` (each below 2^32) in 64-bit lane ``i``."""
    return int.from_bytes(b"".join(value.to_bytes(8, "little") for value in values), "little")


def users(count: int, seed: int) -> list:
    """The first ``count`` users drawn from ``seed``: dicts in the Rust structs' field order."""
    if not 0 <= count:
        raise ValueError(f"count must be non-negative, got {count}")
    rng = ChaCha8.from_u64_seed(seed, blocks_per_refill=_refill_blocks(count))
    # Each user takes 24 draws plus the tag picks; one bulk take per user keeps the per-draw
    # cost at an index step, and the tag loop pulls single draws as it needs them.
    take = rng.take_u64s
    next_u64 = rng.next_u64
    tag_position = _TAG_POSITION
    out = []
    for user_id in range(1, count + 1):
        (
            first, last, email_number, domain,
            area, line,
            house, street_name, street_kind, city, postal,
            stem, kind, level, role,
            year, month, day, hour, minute, second,
            wanted,
        ) = take(22)  # fmt: skip
        first_name = FIRST_NAMES[first % 50]
        last_name = LAST_NAMES[last % 50]
        city_name, state = CITIES[city % 16]
        job_level = JOB_LEVELS[level % 6]
        job_role = JOB_ROLES[role % 12]
        wanted = 1 + wanted % 4
        chosen = []
        while len(chosen) < wanted:
            tag = TAGS[next_u64() % 10]
            if tag not in chosen:
                chosen.append(tag)
        chosen.sort(key=tag_position.__getitem__)
        out.append(
            {
                "id": user_id,
                "first_name": first_name,
                "last_name": last_name,
                "email": (
                    f"{first_name.lower()}.{last_name.lower()}{1 + email_number % 99}"
                    f"@{EMAIL_DOMAINS[domain % 3]}"
                ),
                "phone": f"+1-{201 + area % 789}-555-{100 + line % 100:04}",
                "address": {
                    "street": (
                        f"{1 + house % 9999} {STREET_NAMES[street_name % 20]} "
                        f"{STREET_KINDS[street_kind % 7]}"
                    ),
                    "city": city_name,
                    "state": state,
                    "postal_code": f"{10_000 + postal % 90_000:05}",
                    "country": "US",
                },
                "company": f"{COMPANY_STEMS[stem % 16]} {COMPANY_KINDS[kind % 10]}",
                "job_title": f"{job_level} {job_role}" if job_level else job_role,
                "created_at": (
                    f"{2015 + year % 10:04}-{1 + month % 12:02}-{1 + day % 28:02}"
                    f"T{hour % 24:02}:{minute % 60:02}:{second % 60:02}Z"
                ),
                "tags": chosen,
            }
        )
    return out


def _refill_blocks(count: int) -> int:
    # ~26 draws a user, 8 draws a block: enough blocks for `count` users in one or two refills,
    # between 4 and 1024 blocks so that tiny and huge counts both stay cheap.
    return max(4, min(1024, (count * 26) // 8 + 4))


def serialize(users_list: list) -> bytes:
    """The compact JSON body for already generated users (serde_json's formatting)."""
    return json.dumps(users_list, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def users_json(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> bytes:
    """The exact JSON body the Rust users-service returns for ``count`` users from ``seed``."""
    return serialize(users(count, seed))
