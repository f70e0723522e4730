"""The Idempotency-Key request header (draft-ietf-httpapi-idempotency-key-header).

The draft makes the value a Structured Field string (`"8e03978e-40d5"`, quotes included);
for convenience the same text unquoted is taken too. Either way the key is 1 to 255
printable ASCII characters without spaces. A key is remembered with the request body's
fingerprint, the SHA-256 of its canonical JSON (keys sorted), so the same body written with
other whitespace or key order is the same request.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')


class InvalidIdempotencyKey(ValueError):
    pass


def parse_idempotency_key(value: str) -> str:
    """The key a header value names; InvalidIdempotencyKey for anything else."""
    quoted = _SF_STRING.fullmatch(value)
    key = re.sub(r"\\(.)", r"\1", quoted.group(1)) if quoted else value
    if quoted is None and ('"' in value or "\\" in value):
        raise InvalidIdempotencyKey("must be a quoted string or plain text without quotes")
    if not _KEY.fullmatch(key):
        raise InvalidIdempotencyKey("must be 1 to 255 printable ASCII characters, no spaces")
    return key


def fingerprint(body: dict[str, Any]) -> bytes:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
