"""The arithmetic of avg: partials combine to the mean of the union, whatever the split."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from algorithms.avg import stats
from algorithms.common.errors import DataError

values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)


@given(st.lists(st.lists(values, min_size=1, max_size=20), min_size=1, max_size=5))
def test_combined_partials_equal_the_mean_of_the_union(parts):
    mean, count = stats.combine(stats.partial(p) for p in parts)
    union = [v for p in parts for v in p]
    assert count == len(union)
    assert math.isclose(mean, math.fsum(union) / len(union), rel_tol=1e-9, abs_tol=1e-6)


def test_combine_with_no_values():
    with pytest.raises(DataError, match="every partial result has count 0"):
        stats.combine([stats.Partial(0.0, 0)])


@pytest.mark.parametrize("data", ['{"sum": 3, "count": 2}', b'{"sum": 3.0, "count": 2}',
                                  {"sum": 3, "count": 2}])
def test_parse_partial_accepts_text_and_objects(data):
    assert stats.parse_partial(data, "run 1") == stats.Partial(3.0, 2)


@pytest.mark.parametrize("data, message", [
    ("not json", "result is not JSON"),
    ("[1]", "not a JSON object"),
    ('{"sum": "3", "count": 2}', "needs a finite number 'sum'"),
    ('{"sum": 3, "count": -1}', "count >= 0"),
    ('{"sum": 3, "count": true}', "count >= 0"),
    ('{"sum": 3}', "count=None"),
    (None, "not a JSON object"),
])
def test_parse_partial_rejects_malformed_results(data, message):
    with pytest.raises(DataError, match=message) as info:
        stats.parse_partial(data, "partial run 4 on node node-b")
    assert str(info.value).startswith("partial run 4 on node node-b: ")
