"""Opaque page tokens (an offset plus a checksum of the filter they belong to)."""

from __future__ import annotations

import base64
import hashlib
import json

from core.errors import FieldViolation, InvalidArgument

MAX_OFFSET = 2**31 - 1


def _digest(filter_key: str) -> str:
    return hashlib.sha256(filter_key.encode()).hexdigest()[:12]


def encode_token(offset: int, filter_key: str) -> str:
    raw = json.dumps({"o": offset, "f": _digest(filter_key)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filter_key: str, field: str = "page_token") -> int:
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = data["o"]
        same_filter = data["f"] == _digest(filter_key)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(FieldViolation(field, "is not a token this server issued")) from exc
    # The offsets this server issues are ints within an int32 (as a request's skip is).
    if type(offset) is not int or not 0 <= offset <= MAX_OFFSET:
        raise InvalidArgument(FieldViolation(field, "is not a token this server issued"))
    if not same_filter:
        raise InvalidArgument(FieldViolation(field, "belongs to a different query"))
    return offset
