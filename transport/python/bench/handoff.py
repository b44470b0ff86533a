"""Hand-off time of one 256,873-byte payload through shmbridge in one Python process (publish,
then redeem: copy in with crc32, copy out with crc32 verified) against what a process does
without it: copy the bytes and crc32 them (`bytes` copy + `zlib.crc32`). Prints both medians and
their ratio.

Run: python3 transport/python/bench/handoff.py [--iterations N]  (needs the shmbridge package)
"""

import argparse
import os
import statistics
import sys
import time
import zlib

import shmbridge

PAYLOAD_LEN = 256_873


def seed_payload() -> bytes:
    """The seed report's users JSON when the Python users dataset (server/python) is in this
    checkout, else random bytes of the same length (the timing depends on the length only)."""
    service_dir = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "server", "python"
    )
    sys.path.insert(0, service_dir)
    try:
        from users_dataset import users_json
    except ImportError:
        return os.urandom(PAYLOAD_LEN)
    body = users_json()
    assert len(body) == PAYLOAD_LEN, len(body)
    return body


def samples_ns(step, iterations: int) -> list:
    samples = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        step()
        samples.append(time.perf_counter_ns() - started)
    return samples


def medians_ns(steps: dict, iterations: int, rounds: int = 10) -> dict:
    """Each step's median over `iterations` runs, taken in interleaved rounds so that a noisy
    neighbour slows every step alike."""
    for step in steps.values():  # warm caches, the allocator and the slots
        samples_ns(step, 100)
    samples = {name: [] for name in steps}
    per_round = max(iterations // rounds, 1)
    for _ in range(rounds):
        for name, step in steps.items():
            samples[name] += samples_ns(step, per_round)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args()
    data = seed_payload()
    crc = zlib.crc32(data)

    producer = shmbridge.Producer(slot_count=4)
    with producer, shmbridge.Consumer.connect(producer.serve()) as consumer:

        def handoff():
            handle = producer.publish(data)
            if consumer.redeem(handle) is data or handle.crc != crc:
                raise AssertionError("not a verified copy")

        def copy_and_crc():
            copy = bytes(memoryview(data))
            if zlib.crc32(copy) != crc:
                raise AssertionError("copy differs")

        def copy_only():
            bytes(memoryview(data))

        medians = medians_ns(
            {"shm": handoff, "base": copy_and_crc, "copy": copy_only}, args.iterations
        )

    print(f"payload: {len(data):,} bytes, {args.iterations} iterations each, medians")
    print(f"shmbridge publish + redeem:         {medians['shm'] / 1000:8.1f} us")
    print(f"bytes copy + zlib.crc32:            {medians['base'] / 1000:8.1f} us")
    print(f"  of which the bytes copy:          {medians['copy'] / 1000:8.1f} us")
    print(f"ratio (shmbridge / copy + crc32):   {medians['shm'] / medians['base']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
