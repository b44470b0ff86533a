"""Query parsing for users-service in Python: ``server/src/query.rs``, message for message, so that
a bad query gets the Rust service's very 400."""

import re
from urllib.parse import unquote_to_bytes

from users_dataset import DEFAULT_COUNT, DEFAULT_SEED, MAX_COUNT, U64_MAX


class QueryError(Exception):
    """A bad query string; ``str(error)`` is the message sent to the client."""


def _shown(text: str) -> str:
    """Client text quoted in an error: at most 40 characters, then an ellipsis, in Rust's
    ``{:?}`` form (``"..."`` with backslash escapes)."""
    cut = text[:40] + ("…" if len(text) > 40 else "")
    return '"' + "".join(_debug_char(char) for char in cut) + '"'


_DEBUG_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"', "\0": "\\0"}


def _debug_char(char: str) -> str:
    # Rust's str Debug escapes these, and shows other non-printable characters as \u{hex};
    # Python's isprintable() draws the same line (control, format, separator, unassigned).
    if char in _DEBUG_ESCAPES:
        return _DEBUG_ESCAPES[char]
    if char.isprintable():
        return char
    return f"\\u{{{ord(char):x}}}"


def _not_a_number(name: str, value: str) -> QueryError:
    upper = MAX_COUNT if name == "count" else U64_MAX
    return QueryError(
        f"query parameter {name} must be a non-negative integer from 0 to {upper}, "
        f"got {_shown(value)}"
    )


_DIGITS = re.compile(r"[0-9]+\Z", re.ASCII)
_U64_TEXT = re.compile(r"\+?[0-9]+\Z", re.ASCII)  # Rust's u64::from_str takes a leading +


def _form_pairs(raw: str):
    """``application/x-www-form-urlencoded`` pairs as the Rust `form_urlencoded` crate reads
    them: split on ``&``, empty pieces skipped, ``+`` is a space, percent-decoded, invalid UTF-8
    replaced."""
    for piece in raw.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        yield _form_decode(name), _form_decode(value)


def _form_decode(text: str) -> str:
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "replace")


def _u64(text: str):
    """The value of ``[+]digits`` if it fits in a u64, else None. Leading zeros are allowed
    (as by Rust's parser), and no more than 20 significant digits reach int(), which refuses
    strings over 4300 digits."""
    significant = text.lstrip("+").lstrip("0") or "0"
    if len(significant) > 20:
        return None
    number = int(significant)
    return number if number <= U64_MAX else None


def parse_query(raw: str) -> tuple:
    """``(count, seed)`` from a raw query string (without the ``?``); empty gives defaults."""
    count, seed = DEFAULT_COUNT, DEFAULT_SEED
    seen = set()
    for name, value in _form_pairs(raw):
        if name not in ("count", "seed"):
            raise QueryError(
                f"unknown query parameter {_shown(name)}; accepted parameters are count and seed"
            )
        if name in seen:
            raise QueryError(f"query parameter {name} is given more than once")
        seen.add(name)
        if name == "count":
            if not _DIGITS.match(value):
                raise _not_a_number("count", value)
            # A digit string too long for u64 is still a number, just far over the cap.
            number = _u64(value)
            if number is None or number > MAX_COUNT:
                raise QueryError(f"count {_shown(value)} is above the maximum of {MAX_COUNT}")
            count = number
        else:
            number = _u64(value) if _U64_TEXT.match(value) else None
            if number is None:
                raise _not_a_number("seed", value)
            seed = number
    return count, seed
