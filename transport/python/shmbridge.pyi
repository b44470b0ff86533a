"""Hand payloads between processes through a shared-memory segment of fixed-size slots; every
read is the exact published bytes (crc32-verified) or a typed error.

A producer answers requests (bytes) with responses (a status, content type, headers and a
body) over its control channel; the body travels inline, in a slot or as a sealed memfd, as
its size says. Blocking calls release the GIL while they wait or copy, and take a timeout in
seconds.
"""

from os import PathLike
from types import TracebackType
from typing import (
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypedDict,
    Union,
    final,
)

__all__ = [
    "CONTROL_VERSION",
    "DEFAULT_INLINE_THRESHOLD",
    "LAYOUT_VERSION",
    "MAX_REQUEST_LEN",
    "__version__",
    "AttachError",
    "Busy",
    "ChecksumMismatch",
    "Closed",
    "Consumer",
    "ControlVersionMismatch",
    "Error",
    "Exhausted",
    "Handle",
    "HandlerFailed",
    "KeptBody",
    "Producer",
    "Publication",
    "RequestTooLarge",
    "Response",
    "Stale",
    "TimedOut",
    "TooLarge",
    "VersionMismatch",
    "http_request_encode",
    "http_request_parse",
]

__version__: str
LAYOUT_VERSION: int
"""Version of the segment layout this package reads and writes; other versions are refused."""
CONTROL_VERSION: int
"""Version of the control channel's frames; a producer refuses a request of another version."""
MAX_REQUEST_LEN: int
"""The longest request the control channel carries (65536 bytes)."""
DEFAULT_INLINE_THRESHOLD: int
"""Bodies up to this many bytes (4096) travel inline in the answer unless ``serve`` says
otherwise; larger ones in a slot, and those larger than a slot as a sealed memfd."""

class Error(Exception):
    """Every error shmbridge raises."""

class AttachError(Error):
    """The segment could not be attached (socket, descriptor or header checks failed)."""

class VersionMismatch(AttachError):
    """The segment was written with another layout version."""

class Exhausted(Error):
    """No slot came free before the timeout."""

class TooLarge(Error):
    """The payload is larger than a slot (``publish``) or than the producer's largest payload
    (64 MiB, for bodies the channel carries)."""

class Busy(Error):
    """The producer holds as many unredeemed publications as it allows."""

class Stale(Error):
    """The publication is gone: redeemed already, reclaimed, withdrawn, or of another segment."""

class ChecksumMismatch(Error):
    """The bytes read do not have the crc32 the handle names."""

class TimedOut(Error):
    """No answer within the timeout."""

class RequestTooLarge(Error):
    """The request is longer than the control channel carries (``MAX_REQUEST_LEN``); the
    connection stays open."""

class HandlerFailed(Error):
    """The producer's handler raised (or returned neither bytes nor a Response) for this request;
    the producer goes on serving others."""

class ControlVersionMismatch(Error):
    """The producer speaks another control-channel version: it refused the request and closed
    the connection."""

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
class Response:
    """A status, a content type, header pairs and a body. A handler returns one (or plain
    ``bytes``, a 200 with no content type or headers); ``Consumer.request`` returns one.
    ``ValueError`` for a status outside 100..=999, a header name that is not an HTTP token, a
    value or content type with bytes HTTP does not allow (CR, LF, NUL, non-ASCII), more than 64
    headers or a head above 16 KiB."""

    def __new__(
        cls,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "",
        headers: Sequence[Tuple[str, str]] = (),
    ) -> Response: ...
    @property
    def status(self) -> int: ...
    @property
    def content_type(self) -> str:
        """Empty when none was set."""
    @property
    def headers(self) -> List[Tuple[str, str]]:
        """Header pairs in the order they were added, names as given."""
    @property
    def body(self) -> bytes: ...
    @property
    def tier(self) -> Optional[str]:
        """``"inline"``, ``"slot"`` or ``"sealed"``: how a received body travelled; None for a
        response made here."""
    @property
    def object(self) -> Optional[Tuple[int, int]]:
        """``(key, version)``: the object version the producer named a received response (see
        ``Producer.serve``'s ``object_key``); None when it named none, and for one made here."""

@final
class Publication:
    """A response made for this consumer and not yet redeemed (``Consumer.request_publication``):
    its head, tier and handle are known, its body is still in its slot or memfd. Releasing it,
    or dropping it unredeemed, gives the slot back to the producer at once."""

    @property
    def status(self) -> int: ...
    @property
    def content_type(self) -> str: ...
    @property
    def headers(self) -> List[Tuple[str, str]]: ...
    @property
    def tier(self) -> str:
        """``"inline"``, ``"slot"`` or ``"sealed"``."""
    @property
    def len(self) -> int:
        """The body's length in bytes."""
    @property
    def handle(self) -> Optional[Handle]:
        """The slot's (or sealed ticket's) handle; None for an inline body."""
    def redeem(self) -> Response:
        """Reads and verifies the body. Once; then Stale. Raises Stale (withdrawn, reclaimed),
        ChecksumMismatch."""
    def release(self) -> None:
        """Gives the publication back unread. Idempotent."""

@final
class KeptBody:
    """A body a handler keeps and hands out again (a cache's), made once into a sealed memfd
    that the kernel keeps immutable. A handler returning ``(Response, kept)`` (the ``Response``
    giving the head, with an empty body) answers with that same memfd each time, whatever its
    size: nothing is copied on either side, and a consumer that keeps what it verified checks
    its crc32 once. Raises OSError when the memfd cannot be made, written or sealed."""

    def __new__(cls, data: bytes) -> KeptBody: ...
    def __len__(self) -> int: ...
    @property
    def crc(self) -> int:
        """The body's crc32 (zlib's)."""

_Handler = Callable[
    [bytes],
    Union[bytes, Response, Tuple[Response, KeptBody], Tuple[Response, Iterable[bytes]]],
]

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
        handler: Optional[_Handler] = None,
        socket_name: Optional[str] = None,
        *,
        max_unredeemed_per_peer: Optional[int] = None,
        max_unredeemed: Optional[int] = None,
        allowed_uids: Optional[Sequence[int]] = None,
        inline_threshold: Optional[int] = None,
        object_key: Optional[Callable[[bytes], Optional[int]]] = None,
    ) -> str:
        """Serves the segment on an abstract Unix socket (default ``shmbridge-py-PID-EPOCH``)
        from background threads and returns its name. With ``handler``, also answers
        control-channel requests: ``handler(request)`` gets the request ``bytes`` and returns the
        body ``bytes``, a ``Response``, a ``(Response, KeptBody)`` pair (the head of a response
        with an empty body, and a kept body handed over as its sealed memfd, whatever its size),
        or a ``(Response, chunks)`` pair: the head, and an iterable of ``bytes`` written one by
        one into the body as it grows, never joined (``shmbridge.wsgi.serve(app, producer)`` serves any WSGI
        application this way; see ``help(shmbridge.wsgi)``). The body travels inline up to ``inline_threshold``
        bytes (default ``DEFAULT_INLINE_THRESHOLD``, at most 65536), in a slot up to the slot
        size, and above it (up to 64 MiB) as a sealed memfd. An exception from the handler, or a
        result of another type, fails that request only (the consumer gets HandlerFailed); it is
        reported through ``sys.unraisablehook`` and the producer keeps serving. Unredeemed
        publications are limited per connection (default half the slots) and in all (default
        three quarters). With ``object_key``, ``object_key(request)`` is called before the
        handler: an ``int`` (0 to 2**64 - 1) names the answer the current version of that object
        on the producer's version board, so a consumer keeping it (the gateway) may serve it
        again without asking until ``invalidate(key)``; ``None`` names nothing."""
    def invalidate(self, key: int) -> None:
        """Makes every version of object ``key`` published so far non-current: call after the
        data behind it changed. Once this returns, no consumer request that starts afterwards
        serves them, and an answer whose handler was already running names no version."""
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
    def request(self, request: bytes, timeout: float = 2.0) -> Response:
        """Sends ``request`` (at most ``MAX_REQUEST_LEN`` bytes) to the producer's handler and
        returns its verified response. Raises RequestTooLarge, HandlerFailed, Busy, Exhausted,
        TooLarge, TimedOut, Closed, ControlVersionMismatch, Stale, ChecksumMismatch, Error."""
    def request_publication(self, request: bytes, timeout: float = 2.0) -> Publication:
        """Like ``request``, but returns the response unredeemed. It counts against this
        connection's unredeemed limit until redeemed or released; closing the consumer withdraws
        it."""
    def redeem(self, handle: Union[Handle, str]) -> bytes:
        """The verified bytes of a slot publication (``Producer.publish``). Raises Stale,
        ChecksumMismatch, ValueError (bad text)."""
    def close(self) -> None: ...
    def __enter__(self) -> Consumer: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

def http_request_parse(request: bytes) -> Tuple[str, str, List[Tuple[str, str]], bytes]:
    """``(method, target, headers, body)`` of a request in the HTTP-over-shm convention
    (``METHOD SP /target CRLF (name: value CRLF)* CRLF body``); ``ValueError`` otherwise."""

def http_request_encode(
    method: str, target: str, headers: Sequence[Tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    """The request bytes in the HTTP-over-shm convention; ``ValueError`` for a method that is
    not a token, a target not of the form ``/path?query``, or a bad header."""
