"""paginate(): page sizes, page tokens bound to their query, offsets, next tokens, totals."""

from __future__ import annotations

import base64
import json

import pytest

from core.errors import FieldViolation, InvalidArgument, Violations
from core.paging import MAX_OFFSET, Page, Pager, encode_token, paginate

ROWS = [f"row{i}" for i in range(45)]


def fetch(pager: Pager, rows: list[str] = ROWS) -> Page[str]:
    """What a list endpoint does with a pager: fetch ``limit`` rows from ``offset``."""
    return pager.page(rows[pager.offset : pager.offset + pager.limit], len(rows))


def refusal(page_size: int = 0, page_token: str = "", query: str = "q", skip: int = 0) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as caught:
        paginate(page_size, page_token, query, skip=skip)
    return caught.value.violations


def test_the_default_page_and_the_limits() -> None:
    pager = paginate(0, "", "q")
    assert (pager.size, pager.offset, pager.limit) == (20, 0, 21)
    assert paginate(500, "", "q").size == 500
    assert paginate(1, "", "q").size == 1
    for size in (-1, 501, 2**31 - 1):
        assert refusal(page_size=size) == [FieldViolation("page_size", "must be between 0 and 500 (0 means 20)")]
    assert refusal(skip=-1) == [FieldViolation("skip", "must not be negative")]


def test_violations_come_with_the_callers_own() -> None:
    theirs = Violations()
    theirs.add("queue", "must match [a-z0-9_-]{1,64}")
    with pytest.raises(InvalidArgument) as caught:
        paginate(501, "", "q", skip=-1, violations=theirs)
    assert [v.field for v in caught.value.violations] == ["queue", "page_size", "skip"]


def test_following_the_tokens_visits_every_row_once() -> None:
    seen: list[str] = []
    token = ""
    sizes: list[int] = []
    while True:
        page = fetch(paginate(20, token, "q"))
        seen += page.items
        sizes.append(len(page.items))
        assert page.total_size == len(ROWS)
        token = page.next_page_token
        if not token:
            break
    assert seen == ROWS and sizes == [20, 20, 5]


def test_a_last_page_that_is_exactly_full_has_no_next_token() -> None:
    rows = ROWS[:40]
    second = fetch(paginate(20, fetch(paginate(20, "", "q"), rows).next_page_token, "q"), rows)
    assert len(second.items) == 20 and second.next_page_token == ""
    assert fetch(paginate(20, "", "q"), []) == Page([], "", 0)


def test_skip_moves_on_from_the_token() -> None:
    first = fetch(paginate(10, "", "q"))
    page = fetch(paginate(10, first.next_page_token, "q", skip=5))
    assert page.items == ROWS[15:25]
    assert fetch(paginate(10, "", "q", skip=40)).items == ROWS[40:]


def test_a_page_without_a_count_has_no_total() -> None:
    pager = paginate(2, "", "q")
    assert pager.page(["a", "b", "c"]) == Page(["a", "b"], encode_token(2, "q"), None)


def test_a_token_pages_only_the_query_it_was_issued_for() -> None:
    token = fetch(paginate(20, "", "runs|job-a|None")).next_page_token
    assert paginate(20, token, "runs|job-a|None").offset == 20
    assert refusal(page_token=token, query="runs|job-b|None") == [
        FieldViolation("page_token", "belongs to a different query")
    ]


def raw_token(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "%%%",
        raw_token([1, 2]),
        raw_token("text"),
        raw_token({"o": 1}),
        raw_token({"o": -1, "f": "x"}),
        raw_token({"o": MAX_OFFSET + 1, "f": "x"}),
        raw_token({"o": 1.5, "f": "x"}),
        raw_token({"o": True, "f": "x"}),
        raw_token({"o": "1", "f": "x"}),
    ],
)
def test_a_token_the_server_did_not_issue_is_refused(token: str) -> None:
    assert refusal(page_token=token) == [FieldViolation("page_token", "is not a token this server issued")]


def test_tokens_keep_the_form_clients_already_hold() -> None:
    # Issued before paging had one home: base64url of {"o": offset, "f": digest of the query}.
    assert encode_token(40, "users") == "eyJvIjogNDAsICJmIjogIjdkZmI0Y2Y2Nzc0MiJ9"
    assert paginate(20, "eyJvIjogMjAsICJmIjogImQxYzljNWNiOGU0MCJ9", "jobs|u1|None|None").offset == 20
