"""`COPY` text of columns: escapes, NULLs, and the layout PostgreSQL reads."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ratecard.adapters.db.event_store import copy_column, copy_text


def _read_copy(text: str) -> list[list[str | None]]:
    """PostgreSQL's reading of COPY text (the escapes `copy_column` makes)."""
    unescape = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    rows = []
    for line in text.split("\n")[:-1]:
        row: list[str | None] = []
        for field in line.split("\t"):
            if field == "\\N":
                row.append(None)
                continue
            out, chars = [], iter(field)
            for char in chars:
                out.append(unescape[next(chars)] if char == "\\" else char)
            row.append("".join(out))
        rows.append(row)
    return rows


def test_plain_columns_are_kept_as_they_are():
    values = ["evt_1", "evt_2"]
    assert copy_column(values) is values
    assert copy_text([values, ["a", "b"]]) == "evt_1\ta\nevt_2\tb\n"


def test_nulls_and_special_characters():
    column = copy_column(["a\tb", None, "c\\N", "d\ne\rf"])
    assert column == ["a\\tb", "\\N", "c\\\\N", "d\\ne\\rf"]
    assert copy_text([column]) == "a\\tb\n\\N\nc\\\\N\nd\\ne\\rf\n"


def test_no_rows_is_no_text():
    assert copy_text([[], []]) == ""


@given(st.lists(st.lists(st.one_of(st.none(), st.text()), min_size=3, max_size=3), min_size=1))
def test_copy_text_reads_back_as_the_values(rows):
    columns = [copy_column(list(column)) for column in zip(*rows, strict=True)]
    assert _read_copy(copy_text(columns)) == rows
