"""A request body's size in JSON values, bounded before it is parsed.

Validating a chat request costs time in proportion to the number of JSON values
in it, not to its bytes: a body just under the 8 MiB limit holding 285,000
one-word messages blocked the event loop for 2.4 s (pydantic validates every
item before it can count them, and even a bare parse takes ~0.1-0.2 s).
:func:`check_shape` refuses such a body first, without parsing it:

- ``bytes.count`` of ``{``, ``[`` and ``,`` (memchr speed, ~1 ms for 8 MiB) bounds
  the objects, arrays and values in the body from above. A body under the bounds
  cannot hold too many messages or values, and pays nothing more;
- above them, one vectorised pass (numpy) finds the string literals (quotes not
  escaped by an odd run of backslashes) and counts only the structural characters
  outside them, with their nesting depth: the messages (objects directly in the
  top-level ``messages`` array), the objects inside messages (content parts), and
  all objects, arrays and values. Braces and commas inside strings (code in a
  prompt) do not count. ~10-30 ms for the 285k-message body; past a limit: 400
  naming the field and the limit.
"""

from __future__ import annotations

import re

import numpy as np

from moagraph.serve.errors import ApiError

# What a request may hold per message it may have (content parts, tool calls, stop
# strings, extra fields), plus a fixed allowance: far above what chat clients send.
CONTAINERS_PER_MESSAGE = 10
VALUES_PER_MESSAGE = 40
ALLOWANCE = 1000

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN_OBJ, _OPEN_ARR, _CLOSE_OBJ, _CLOSE_ARR, _COMMA = (ord(c) for c in "{[}],")
_MESSAGES_KEY = re.compile(rb'"messages"\s*:\s*$')


def limits(max_messages: int) -> tuple[int, int]:
    """(objects + arrays, values) a request with up to ``max_messages`` messages may have."""
    return (
        CONTAINERS_PER_MESSAGE * max_messages + ALLOWANCE,
        VALUES_PER_MESSAGE * max_messages + ALLOWANCE,
    )


# bodies larger than this are scanned in a worker thread (the scan releases the GIL)
SHAPE_IN_THREAD_BYTES = 256 * 1024
# past this many objects and arrays the body is refused without finding its messages
_NAME_FIELD_UP_TO = 1_000_000


def _outside_strings(arr: np.ndarray, has_backslash: bool) -> np.ndarray:
    """True where a byte is outside every string literal (or is its closing quote)."""
    quote = (arr == _QUOTE).view(np.uint8)
    if has_backslash:  # a quote after an odd run of backslashes is escaped: not a delimiter
        quotes = np.flatnonzero(quote)
        bs = np.flatnonzero(arr == _BACKSLASH)
        after_bs = quotes[(quotes > 0) & (arr[np.maximum(quotes - 1, 0)] == _BACKSLASH)]
        if after_bs.size:
            breaks = np.ones(bs.size, dtype=bool)
            breaks[1:] = np.diff(bs) != 1
            run_start = bs[np.maximum.accumulate(np.where(breaks, np.arange(bs.size), 0))]
            p = after_bs - 1
            run = p - run_start[np.searchsorted(bs, p)] + 1
            quote = quote.copy()
            quote[after_bs[run % 2 == 1]] = 0
    return (np.cumsum(quote, dtype=np.int32) & 1) == 0


def _too_many(what: str, n: int, limit: int, param: str | None, code: str) -> ApiError:
    option = "server option --max-messages"
    if code == "request_too_complex":
        option = (
            f"{CONTAINERS_PER_MESSAGE if 'arrays' in what else VALUES_PER_MESSAGE} per "
            f"message of the {option}, plus {ALLOWANCE:,}"
        )
    return ApiError(
        400, f"too many {what}: {n:,}; the limit is {limit:,} ({option})", param=param, code=code
    )


def _check_messages(
    body: bytes, arr: np.ndarray, opens_at: np.ndarray, closes_at: np.ndarray, max_messages: int
) -> None:
    """The messages and the objects inside them, counted by nesting depth."""
    pos = np.flatnonzero(opens_at | closes_at)
    brackets = arr[pos]
    opens = opens_at[pos]
    delta = opens.astype(np.int64) * 2 - 1
    depth = np.cumsum(delta) - delta  # nesting depth before each bracket
    # the top-level "messages" array: '[' at depth 1 right after the key
    for i in np.flatnonzero((brackets == _OPEN_ARR) & (depth == 1)):
        start = int(pos[i])
        if not _MESSAGES_KEY.search(body[max(0, start - 64) : start]):
            continue
        ends = np.flatnonzero(~opens[i + 1 :] & (depth[i + 1 :] == 2))
        j = i + 1 + int(ends[0]) if ends.size else len(pos)
        inner_obj, inner_depth = brackets[i + 1 : j] == _OPEN_OBJ, depth[i + 1 : j]
        n_messages = int(np.count_nonzero(inner_obj & (inner_depth == 2)))
        if n_messages > max_messages:
            raise _too_many("messages", n_messages, max_messages, "messages", "too_many_messages")
        n_parts = int(np.count_nonzero(inner_obj & (inner_depth == 4)))
        if n_parts > max_messages:
            raise _too_many(
                "content parts (objects inside messages)",
                n_parts,
                max_messages,
                "messages",
                "too_many_messages",
            )
        return


def check_shape(body: bytes, max_messages: int) -> None:
    """Raise a 400 :class:`ApiError` if ``body`` has more than ``max_messages`` messages,
    more than ``max_messages`` objects inside its messages (content parts), or more
    JSON objects, arrays or values than :func:`limits` allows. A body that is not JSON
    passes (validation names that error)."""
    max_containers, max_values = limits(max_messages)
    n_open = body.count(b"{") + body.count(b"[")
    if n_open <= max_messages and body.count(b",") < max_messages:
        return  # cannot hold more messages, parts, containers or values than allowed
    arr = np.frombuffer(body, dtype=np.uint8)
    outside = _outside_strings(arr, body.find(b"\\") >= 0)  # braces in strings are text
    opens_at = ((arr == _OPEN_OBJ) | (arr == _OPEN_ARR)) & outside
    n_containers = int(np.count_nonzero(opens_at))
    n_values = int(np.count_nonzero((arr == _COMMA) & outside)) + n_containers
    if n_containers > max_messages and n_containers <= _NAME_FIELD_UP_TO:
        closes_at = ((arr == _CLOSE_OBJ) | (arr == _CLOSE_ARR)) & outside
        _check_messages(body, arr, opens_at, closes_at, max_messages)
    if n_containers > max_containers:
        raise _too_many(
            "JSON objects and arrays in the body",
            n_containers,
            max_containers,
            None,
            "request_too_complex",
        )
    if n_values > max_values:
        raise _too_many(
            "JSON values in the body", n_values, max_values, None, "request_too_complex"
        )
