"""The package and the interpreter's lock (the GIL): no Rust lock waited for while the GIL is
held and the GIL never waited for while a Rust lock is held (issue 21: `serve` and `stats` used
to deadlock the whole interpreter), channel threads that meet an interpreter on its way out,
and producers and consumers dropped without `close()`.

A deadlock here takes the GIL with it, so nothing in the same interpreter could notice it: each
scenario that could hang runs in a child interpreter bounded by a timeout."""

import gc
import subprocess
import sys
import threading
import time

import pytest

import shmbridge

CHILD_TIMEOUT = 60.0

# One thread calls stats() in a loop while the main thread serves, again and again. Before the
# fix `serve` held the control lock while it waited to re-take the GIL, and `stats` held the GIL
# while it waited for the control lock: the first try hung. Only API that old and new versions
# share, so the same script shows the old code hanging.
STATS_WHILE_SERVING = """
import sys, threading, shmbridge

def handler(*request):
    return b""

for attempt in range(int(sys.argv[1])):
    producer = shmbridge.Producer(slot_count=2, slot_size=4096)
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            producer.stats()

    poller = threading.Thread(target=poll)
    poller.start()
    producer.serve(handler if attempt % 2 else None)
    stop.set()
    poller.join()
    producer.close()
print("served", attempt + 1, "times", flush=True)
"""


def run_child(script: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, "-c", script, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the interpreter hung for {CHILD_TIMEOUT} s: {hung.stdout!r} {hung.stderr!r}")


def test_stats_while_serving_does_not_deadlock_the_interpreter():
    finished = run_child(STATS_WHILE_SERVING, "200")
    assert (finished.returncode, finished.stdout, finished.stderr) == (
        0, "served 200 times\n", "",
    )  # fmt: skip


def test_every_method_runs_while_another_thread_waits_in_a_handler():
    # A handler blocked in Python holds no Rust lock: stats, publish, reap and a second
    # consumer all go on meanwhile, and the handler may call the producer itself.
    entered, release = threading.Event(), threading.Event()

    def handler(request):
        if request == b"block":
            entered.set()
            release.wait(10)
        return str(producer.stats()["peers"]).encode()

    with shmbridge.Producer(slot_count=4, slot_size=4096) as producer:
        name = producer.serve(handler)
        with shmbridge.Consumer.connect(name) as first, shmbridge.Consumer.connect(name) as other:
            blocked = threading.Thread(target=first.request, args=(b"block", 10))
            blocked.start()
            assert entered.wait(10)
            assert producer.stats()["peers"] == 2
            assert other.redeem(producer.publish(b"meanwhile")) == b"meanwhile"
            assert producer.reap() == 0
            assert other.request(b"other").body == b"2"
            release.set()
            blocked.join(10)
            assert not blocked.is_alive()


# A producer left open at exit while a consumer in another process keeps asking: its channel
# threads meet an interpreter that is finalizing (they may no longer attach to it), and the
# producer is dropped without close() during finalization.
SERVE_UNTIL_EXIT = """
import sys, shmbridge
producer = shmbridge.Producer(slot_count=4, slot_size=4096)

def handler(request):
    return bytes(100) if request == b"small" else bytes(10_000)

print(producer.serve(handler), flush=True)
sys.stdin.readline()
"""


def test_an_interpreter_exiting_while_requests_arrive_exits_cleanly():
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", SERVE_UNTIL_EXIT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stop = threading.Event()
        try:
            consumer = shmbridge.Consumer.connect(child.stdout.readline().strip())
            answered = []

            def ask():
                while not stop.is_set():
                    try:
                        answered.append(consumer.request(b"small", timeout=1).body)
                    except shmbridge.Error:
                        # Refused (the interpreter is exiting) or closed: both are expected.
                        if not consumer.is_open:
                            return

            askers = [threading.Thread(target=ask) for _ in range(4)]
            for asker in askers:
                asker.start()
            deadline = time.monotonic() + 5
            while not answered and time.monotonic() < deadline:
                time.sleep(0.01)
            assert answered, "the child served nothing"
            child.stdin.write("exit\n")
            child.stdin.flush()
            try:
                returncode = child.wait(CHILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail("the child hung at exit")
            stop.set()
            for asker in askers:
                asker.join(10)
            consumer.close()
            stderr = child.stderr.read()
            assert (returncode, stderr) == (0, ""), stderr
            assert set(answered) == {bytes(100)}
        finally:
            stop.set()
            child.kill()
            child.wait(10)
            for stream in (child.stdin, child.stdout, child.stderr):
                stream.close()


def test_a_producer_and_consumer_dropped_without_close_stop_their_threads():
    producer = shmbridge.Producer(slot_count=2, slot_size=4096)
    name = producer.serve(lambda request: request)
    consumer = shmbridge.Consumer.connect(name)
    assert consumer.request(b"echo").body == b"echo"
    del consumer
    gc.collect()
    deadline = time.monotonic() + 5
    while producer.stats()["peers"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert producer.stats()["peers"] == 0
    del producer
    gc.collect()
    # The socket went with the producer.
    with pytest.raises(shmbridge.AttachError):
        shmbridge.Consumer.connect(name, timeout=0.5)

