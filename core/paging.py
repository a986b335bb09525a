"""Paging of list requests: page size, page token, offset, next token and total, for
every list endpoint alike.

A page token is opaque to clients: the offset of the page it starts, plus a digest of
the query it pages (the list and its filter), so a token replayed against another
filter is refused instead of paging a different list. ``paginate`` reads a request's
paging fields into a ``Pager``; the caller fetches ``pager.limit`` rows from
``pager.offset`` and ``pager.page`` turns them into the page to answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from core import validation
from core.errors import FieldViolation, InvalidArgument, Violations

T = TypeVar("T")

# The offsets this server issues are ints within an int32 (as a request's skip is).
MAX_OFFSET = 2**31 - 1
NOT_ISSUED = "is not a token this server issued"
OTHER_QUERY = "belongs to a different query"


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str  # "" on the last page
    total_size: int | None = None  # None: the list is not counted


@dataclass(frozen=True)
class Pager:
    """Where a page starts, how long it is, and the query its tokens are bound to."""

    size: int
    offset: int
    query: str

    @property
    def limit(self) -> int:
        """Rows to fetch: one more than the page, to know whether another page follows."""
        return self.size + 1

    def page(self, rows: Sequence[T], total: int | None = None) -> Page[T]:
        """The page of ``rows`` (at most ``limit`` of them, fetched from ``offset``)."""
        more = len(rows) > self.size
        return Page(list(rows[: self.size]), encode_token(self.offset + self.size, self.query) if more else "", total)


def paginate(
    page_size: int, page_token: str, query: str, *, skip: int = 0, violations: Violations | None = None
) -> Pager:
    """A list request's paging fields read: ``page_size`` within its limits (0 means the
    default), ``page_token`` one issued for ``query``, ``skip`` rows further on.
    ``violations``: what the caller found wrong with the rest of the request, raised
    together with these."""
    v = violations if violations is not None else Violations()
    size = validation.check_page_size(v, page_size)
    if skip < 0:
        v.add("skip", "must not be negative")
    v.raise_if_any()
    return Pager(size, decode_token(page_token, query) + skip, query)


def _digest(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:12]


def encode_token(offset: int, query: str) -> str:
    raw = json.dumps({"o": offset, "f": _digest(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: str, field: str = "page_token") -> int:
    """The offset ``token`` starts at; 0 for no token."""
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = data["o"]
        same_query = data["f"] == _digest(query)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(FieldViolation(field, NOT_ISSUED)) from exc
    if type(offset) is not int or not 0 <= offset <= MAX_OFFSET:
        raise InvalidArgument(FieldViolation(field, NOT_ISSUED))
    if not same_query:
        raise InvalidArgument(FieldViolation(field, OTHER_QUERY))
    return offset
