"""`dumps_text_map` (orjson, on the ingestion hot path) writes the canonical text `dumps` does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ratecard.adapters.db.types import dumps, dumps_text_map

# Any text at all: control characters, quotes, backslashes, non-ASCII, astral planes, and lone
# surrogates (JSON's "\ud800" escape can carry one into a property).
_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)


@given(st.dictionaries(_TEXT, _TEXT, max_size=8))
def test_the_same_text_as_the_canonical_encoder(value):
    assert dumps_text_map(value) == dumps(value)


def test_keys_sort_by_code_point_and_escapes_match():
    value = {"é": "1", "z": 'a"b\\c\n\x00\x7f\u2028', "\U0001f600": "x", "A": ""}
    text = dumps_text_map(value)
    assert text == dumps(value)
    assert text.index('"A"') < text.index('"z"') < text.index('"é"') < text.index('"\U0001f600"')


def test_a_lone_surrogate_is_kept_as_the_standard_encoder_keeps_it():
    assert dumps_text_map({"k": "\ud800"}) == dumps({"k": "\ud800"})


@pytest.mark.parametrize("bad", [1, 1.5, None, True, ["x"]])
def test_anything_but_text_values_is_refused(bad):
    with pytest.raises(TypeError):
        dumps_text_map({"k": bad})
