"""JSON in and out, with orjson when it is installed and the standard library otherwise.

    record = loads(b'{"a": 1}')
    line = dumps_line(record)   # compact UTF-8 bytes ending in a newline

Both paths produce the same compact text, so output files do not depend on which
codec was present.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # the optional accelerator is missing: stay pure Python
    orjson = None


def loads(data: bytes | str) -> Any:
    """Parse one document; raises ValueError (a JSONDecodeError) on bad input, explained
    in the standard library's words whichever codec refused it."""
    if orjson is None:
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as refusal:
        try:
            json.loads(data)
        except ValueError as error:
            raise error from None
        raise refusal from None  # orjson is stricter (huge integers, lone surrogates)


def dumps_line(value: Any) -> bytes:
    """One compact JSON document followed by a newline, as UTF-8 bytes."""
    if orjson is not None:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


# json.dumps builds an encoder with these options on every call; one is enough.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# Where orjson's text may differ from the standard library's: floats it writes otherwise
# (1e-05 against 0.00001, 1e+16 against 1e16). Any such text is encoded again by json.
# That is a digit before an exponent or before 15 more digits, or ".0000"; found with
# bytes scans on a copy whose digits are all 0 and whose "E" is "e", some times faster
# than a regular expression. `find`, not `in`: `in` first tries the needle as an integer.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_SIXTEEN_DIGITS = b"0" * 16


def dumps_canonical(value: Any) -> bytes:
    """Keys sorted, no spaces: equal values give equal bytes, whatever their key order.
    The bytes are the standard library's (fingerprints written by earlier runs must match),
    produced by orjson when its text is sure to be the same."""
    if orjson is not None:
        try:
            data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # huge integers, lone surrogates: json decides
            pass
        else:
            if data.find(b".0000") < 0:
                zeroed = data.translate(_DIGITS_AS_ZERO)
                if zeroed.find(b"0e") < 0 and zeroed.find(_SIXTEEN_DIGITS) < 0:
                    return data
    return _CANONICAL.encode(value).encode()


def dumps(value: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
