"""`web.exact_json`: the documents the standard library reads exactly, or the same refusal."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ratecard.core.events import refuse_constant
from ratecard.web import exact_json

_NUMBERS = st.from_regex(
    r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?", fullmatch=True
)
_STRINGS = st.one_of(
    st.builds(
        json.dumps, st.text(st.characters(codec="utf-8"), max_size=8), ensure_ascii=st.booleans()
    ),
    st.sampled_from(['"\\ud800"', '"\\u00e9"', '"\\n\\t\\\\\\/"', '"\\x"', '"a', '"\t"']),
)
_SPACE = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])
_BAD = st.sampled_from(
    ["NaN", "-Infinity", "01", "1.", ".5", "+1", "tru", "[1,]", "{,}", "'a'", "1 2"]
)


def _document() -> st.SearchStrategy[str]:
    leaves = st.one_of(_NUMBERS, _STRINGS, st.sampled_from(["true", "false", "null"]), _BAD)

    def nest(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        arrays = st.builds(
            lambda items, s: "[" + f",{s}".join(items) + "]", st.lists(children, max_size=4), _SPACE
        )
        objects = st.builds(
            lambda pairs, s: "{" + ",".join(f"{k}{s}:{s}{v}" for k, v in pairs) + "}",
            st.lists(st.tuples(_STRINGS, children), max_size=4),
            _SPACE,
        )
        return st.one_of(arrays, objects)

    return st.builds(
        lambda s, d, t: s + d + t, _SPACE, st.recursive(leaves, nest, max_leaves=12), _SPACE
    )


def _read(read, body: bytes) -> str:
    try:
        return repr(read(body))  # repr: Decimal("1.50") is not Decimal("1.5")
    except RecursionError:
        return "too deep"
    except ValueError:
        return "not JSON"


def _standard(body: bytes) -> object:
    return json.loads(body, parse_float=Decimal, parse_constant=refuse_constant)


@given(_document(), st.booleans())
@example('{"a": 1, "a": 2.50}', False)
@example("[1e400, -0.0, 12345678901234567890123, 1E-7]", False)
@example('"\\ud800"', False)
@example("[NaN]", False)
@example("[1]", True)
def test_the_same_document_as_the_standard_library(text, byte_order_mark):
    body = ("\ufeff" if byte_order_mark else "").encode() + text.encode()
    assert _read(exact_json.loads, body) == _read(_standard, body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"tokens": 1250, "cost": 0.000125}', {"tokens": 1250, "cost": Decimal("0.000125")}),
        (b"\xef\xbb\xbf[1.50]", [Decimal("1.50")]),  # a byte order mark
        (b'"\\ud800"', "\ud800"),
    ],
)
def test_numbers_are_exact_and_what_the_standard_library_takes_is_taken(body, expected):
    assert exact_json.loads(body) == expected
    assert repr(exact_json.loads(body)) == repr(expected)


@pytest.mark.parametrize("body", [b"[NaN]", b"[1,]", b"\xff", b"1" + b"0" * 5000, b""])
def test_what_is_not_json_is_a_value_error(body):
    with pytest.raises(ValueError):
        exact_json.loads(body)


def test_nesting_too_deep_is_a_recursion_error():
    with pytest.raises(RecursionError):
        exact_json.loads(b"[" * 100_000 + b"]" * 100_000)
