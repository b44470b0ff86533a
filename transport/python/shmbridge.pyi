"""Hand payloads between processes through a shared-memory segment of fixed-size slots; every
read is the exact published bytes (crc32-verified) or a typed error.

Blocking calls release the GIL while they wait or copy, and take a timeout in seconds.
"""

from os import PathLike
from types import TracebackType
from typing import Callable, Dict, Optional, Sequence, Type, TypedDict, Union, final

__all__ = [
    "LAYOUT_VERSION",
    "__version__",
    "AttachError",
    "Busy",
    "ChecksumMismatch",
    "Closed",
    "Consumer",
    "Error",
    "Exhausted",
    "Handle",
    "Producer",
    "Stale",
    "TimedOut",
    "TooLarge",
    "VersionMismatch",
]

__version__: str
LAYOUT_VERSION: int
"""Version of the segment layout this package reads and writes; other versions are refused."""

class Error(Exception):
    """Every error shmbridge raises."""

class AttachError(Error):
    """The segment could not be attached (socket, descriptor or header checks failed)."""

class VersionMismatch(AttachError):
    """The segment was written with another layout version."""

class Exhausted(Error):
    """No slot came free before the timeout."""

class TooLarge(Error):
    """The payload is larger than a slot (``publish``, ``request_handle``) or than the producer's
    largest payload (64 MiB, for bodies the channel carries)."""

class Busy(Error):
    """The producer holds as many unredeemed publications as it allows."""

class Stale(Error):
    """The publication is gone: redeemed already, reclaimed, withdrawn, or of another segment."""

class ChecksumMismatch(Error):
    """The bytes read do not have the crc32 the handle names."""

class TimedOut(Error):
    """No answer within the timeout."""

class Closed(Error):
    """The producer, consumer or control channel is closed."""

@final
class Handle:
    """Names one publication. ``str(handle)`` is ``EPOCH-SLOT-GENERATION-LEN-CRC`` in lowercase
    hex, the form that travels between processes (and between Python and Rust)."""

    def __new__(cls, epoch: int, slot: int, generation: int, len: int, crc: int) -> Handle: ...
    @staticmethod
    def parse(text: str) -> Handle:
        """Parses the text form; ``ValueError`` unless it is exactly what ``str()`` produces."""
    @property
    def epoch(self) -> int: ...
    @property
    def slot(self) -> int: ...
    @property
    def generation(self) -> int: ...
    @property
    def len(self) -> int: ...
    @property
    def crc(self) -> int:
        """crc32 of the payload (``zlib.crc32`` of the bytes)."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

class _SlotCounts(TypedDict):
    free: int
    writing: int
    ready: int
    reading: int
    unknown: int

class _Stats(TypedDict):
    slots: _SlotCounts
    reclaims: Dict[str, int]
    writes_reclaimed: int
    claims_exhausted: int
    header_repairs: int
    withdrawn: int
    sealed_publications: int
    sealed_bytes_in_flight: int
    peers: int

@final
class Producer:
    """Creates a segment (a sealed memfd, or a new file at ``path``) and publishes into it. A
    reaper thread takes back slots whose writer outlived ``lease`` or whose publication waited
    longer than ``ready_ttl`` (seconds) for its consumer. ``ValueError`` for a bad geometry
    (``slot_size`` a multiple of 64) or duration."""

    def __new__(
        cls,
        slot_count: int = 64,
        slot_size: int = 524288,
        path: Optional[Union[str, PathLike[str]]] = None,
        lease: float = 1.0,
        ready_ttl: float = 5.0,
        reap_interval: float = 0.25,
    ) -> Producer: ...
    @property
    def epoch(self) -> int: ...
    @property
    def socket_name(self) -> Optional[str]:
        """The socket ``serve`` listens on; None before it."""
    @property
    def slot_count(self) -> int: ...
    @property
    def slot_size(self) -> int: ...
    def publish(self, data: bytes, timeout: float = 0.2) -> Handle:
        """Copies ``data`` into a free slot, waiting up to ``timeout`` for one.
        Raises TooLarge, Exhausted, Closed."""
    def serve(
        self,
        callback: Optional[Callable[[int, int], bytes]] = None,
        socket_name: Optional[str] = None,
        *,
        claim_timeout: float = 0.2,
        max_unredeemed_per_peer: Optional[int] = None,
        max_unredeemed: Optional[int] = None,
        allowed_uids: Optional[Sequence[int]] = None,
    ) -> str:
        """Serves the segment on an abstract Unix socket (default ``shmbridge-py-PID-EPOCH``)
        from background threads and returns its name. With ``callback``, also answers
        control-channel requests: ``callback(count, seed)`` returns the payload ``bytes``; a body
        larger than a slot (up to 64 MiB) travels as a sealed memfd with the answer. A
        ``ValueError`` from it refuses the request as a bad request, any other exception (or a
        non-bytes result) as a producer failure; it is reported through ``sys.unraisablehook``
        and the producer keeps serving. Unredeemed publications are limited per connection
        (default half the slots) and in all (default three quarters)."""
    def reap(self) -> int:
        """One reaper pass now; returns how many slots it took back."""
    def stats(self) -> _Stats: ...
    def close(self) -> None:
        """Stops serving and the reaper. Idempotent."""
    def __enter__(self) -> Producer: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class Consumer:
    """Attached to a producer's segment through its socket."""

    @staticmethod
    def connect(
        socket_name: str, timeout: float = 5.0, producer_uids: Optional[Sequence[int]] = None
    ) -> Consumer:
        """Raises AttachError (VersionMismatch for a segment of another layout version)."""
    @property
    def epoch(self) -> int: ...
    @property
    def is_open(self) -> bool: ...
    def request(self, count: int, seed: int, timeout: float = 2.0) -> bytes:
        """Asks the producer over the control channel for the payload of ``(count, seed)`` and
        redeems it. Raises Busy, Exhausted, TooLarge, TimedOut, Closed, Error (refused)."""
    def request_handle(self, count: int, seed: int, timeout: float = 2.0) -> Handle:
        """Like ``request``, but returns the handle unredeemed. A publication larger than a slot
        comes as a descriptor no handle can carry: TooLarge (and it is given back)."""
    def redeem(self, handle: Union[Handle, str]) -> bytes:
        """The verified bytes. Raises Stale, ChecksumMismatch, ValueError (bad text)."""
    def close(self) -> None: ...
    def __enter__(self) -> Consumer: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
