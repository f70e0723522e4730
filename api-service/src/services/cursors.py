"""The task list's cursor: opaque to clients, a position (created_at, id) to us.

It carries the last row of a page and a tag over that position and the filters it was made
for, so that a cursor that was cut, edited or taken to another filter is refused (400)
instead of silently paging through something else. The position is no secret (tenant
checks never rely on it); the tag only catches a cursor that is not one we made.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import uuid
from datetime import UTC, datetime, timedelta

_VERSION = 1
_LAYOUT = struct.Struct(">Bq16s")  # version, microseconds since the epoch, task id
_TAG_BYTES = 8
_KEY = b"task-service list cursor v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidCursor(ValueError):
    pass


def _tag(position: bytes, scope: bytes) -> bytes:
    return hashlib.blake2b(position + scope, key=_KEY, digest_size=_TAG_BYTES).digest()


def encode_cursor(created_at: datetime, task_id: str, *, scope: bytes) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    position = _LAYOUT.pack(_VERSION, micros, uuid.UUID(task_id).bytes)
    return base64.urlsafe_b64encode(position + _tag(position, scope)).rstrip(b"=").decode()


def decode_cursor(cursor: str, *, scope: bytes) -> tuple[datetime, str]:
    """The position a cursor holds; InvalidCursor unless we made it, for this `scope`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursor("not a cursor this API made") from None
    position, tag = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    if len(position) != _LAYOUT.size or tag != _tag(position, scope):
        raise InvalidCursor("not a cursor this API made, or made for other filters")
    version, micros, task_bytes = _LAYOUT.unpack(position)
    if version != _VERSION:
        raise InvalidCursor("not a cursor this API made")
    return _EPOCH + timedelta(microseconds=micros), str(uuid.UUID(bytes=task_bytes))
