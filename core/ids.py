"""Identifiers."""

from __future__ import annotations

import random
import re
import time


def new_id() -> str:
    """A UUIDv7 string: time-ordered, so inserts append to indexes instead of scattering."""
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(74)  # identifiers, not secrets (reseeded after fork); no system call
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_uuid(text: str) -> bool:
    """The 36-character hyphenated form only (``uuid.UUID`` also takes braces and URNs)."""
    return _UUID.fullmatch(text) is not None
