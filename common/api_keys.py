"""API keys (API_KEYS): who a request is, from its `Authorization: Bearer <key>`.

API_KEYS holds `name:sha256-hex` pairs, comma-separated: a key's name (its tenant, 1-64 of
`[A-Za-z0-9_.-]`) and the SHA-256 of the key in lower-case hex. Only digests are configured,
so a leaked environment or `.env` gives no key away. `make api-key NAME=...` prints a new key
and its line. A presented key is hashed and compared with every configured digest in constant
time (`hmac.compare_digest`, over all of them whatever matches), so neither which key nor how
much of one matched shows in the time an answer takes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from types import MappingProxyType

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
# A new key: 32 random bytes, URL-safe base64 (43 characters), with a prefix that says what it is.
_PREFIX = "tsk_"


def parse_api_keys(text: str) -> Mapping[str, bytes]:
    """The digests of API_KEYS by name; ValueError saying what is wrong with a pair."""
    keys: dict[str, bytes] = {}
    seen: set[str] = set()
    for number, pair in enumerate((part.strip() for part in text.split(",")), start=1):
        if not pair:
            continue
        name, colon, digest = pair.partition(":")
        if not colon or not _NAME.fullmatch(name):
            raise ValueError(
                f"pair {number} must be name:sha256-hex, the name 1-64 of A-Z a-z 0-9 _ . -"
            )
        if not _DIGEST.fullmatch(digest):
            raise ValueError(
                f"pair {number} ({name}): the SHA-256 of the key in 64 lower-case hex digits"
                " (make api-key prints one), never the key itself"
            )
        if name in keys:
            raise ValueError(f"the name {name} is given twice")
        if digest in seen:
            raise ValueError(f"{name}: the same key as another name")
        keys[name] = bytes.fromhex(digest)
        seen.add(digest)
    return MappingProxyType(keys)


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def tenant_of_key(keys: Mapping[str, bytes], presented: str) -> str | None:
    """The name whose key `presented` is, or None; every digest is compared, in constant time."""
    digest = digest_of(presented)
    found = None
    for name, expected in keys.items():
        if hmac.compare_digest(digest, expected):
            found = name
    return found


def new_api_key(name: str) -> tuple[str, str]:
    """A new random key for `name`, and the API_KEYS pair that admits it."""
    if not _NAME.fullmatch(name):
        raise ValueError("NAME must be 1-64 of A-Z a-z 0-9 _ . -")
    key = _PREFIX + secrets.token_urlsafe(32)
    return key, f"{name}:{digest_of(key).hex()}"


def main(name: str) -> None:
    """`make api-key NAME=...`: the key, and the pair for API_KEYS."""
    try:
        key, pair = new_api_key(name)
    except ValueError as exc:
        raise SystemExit(f"make api-key: {exc}") from None
    print(f"API key for {name} (give it to that client; it is not stored anywhere):\n  {key}")
    print(f"Add this pair to API_KEYS (comma-separated with the others):\n  {pair}")
