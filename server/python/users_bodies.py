"""The users bodies of users-service in Python (``server/src/users_service/bodies.rs``): users
generated once per query, serialized per request (the seed system's per-request work) or, with
``--cache``, once."""

import threading
import zlib
from collections import OrderedDict

import users_dataset

# Both caches hold at most 16 queries and 32 MiB, as in Rust; a generated user weighs ~1 KiB of
# Python objects (measured with tracemalloc), which is what the dataset cache counts.
CACHE_MAX_ENTRIES = 16
CACHE_MAX_BYTES = 32 << 20
USER_WEIGHT_BYTES = 1024


class QueryCache:
    """A thread-safe LRU bounded by entries and by the summed weight of its values; a value
    heavier than the whole bound is returned but not kept (server/src/query_cache.rs)."""

    def __init__(self, max_entries: int = CACHE_MAX_ENTRIES, max_bytes: int = CACHE_MAX_BYTES):
        self._entries: OrderedDict = OrderedDict()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def get_or_insert(self, key, make, weigh):
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry[0]
        # Made outside the lock: a slow query must not stall hits on others. Two threads
        # missing the same key both make it; the values are equal, the last one is kept.
        value = make()
        weight = weigh(value)
        if weight > self._max_bytes:
            return value
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, weight)
            self._bytes += weight
            while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return value


class Bodies:
    """The users bodies every path serves (GET /users, the control channel, POST /shm/users)."""

    def __init__(self, cache: bool):
        self._datasets = QueryCache()
        self._payloads = QueryCache() if cache else None

    def payload(self, count: int, seed: int) -> tuple:
        """``(body, crc32)`` for GET /users."""
        if self._payloads is None:
            body = self._serialize(count, seed)
            return body, zlib.crc32(body)
        return self._cached_payload(count, seed)

    def body(self, count: int, seed: int) -> bytes:
        """The body alone, for POST /shm/users (the slot's writer checksums it as it copies)."""
        if self._payloads is None:
            return self._serialize(count, seed)
        return self._cached_payload(count, seed)[0]

    def _cached_payload(self, count: int, seed: int) -> tuple:
        def make():
            body = self._serialize(count, seed)
            return body, zlib.crc32(body)

        return self._payloads.get_or_insert((count, seed), make, lambda payload: len(payload[0]))

    def _serialize(self, count: int, seed: int) -> bytes:
        users = self._datasets.get_or_insert(
            (count, seed),
            lambda: users_dataset.users(count, seed),
            lambda users: len(users) * USER_WEIGHT_BYTES,
        )
        return users_dataset.serialize(users)
