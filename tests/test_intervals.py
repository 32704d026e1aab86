"""Uncertainty of reported numbers: bootstrap and Wilson intervals, paired comparisons, strict JSON."""
import json
import math

import numpy as np
import pytest

from massact_viz.intervals import Interval, compare, mean_interval, proportion_interval, wilson_interval
from massact_viz.files import strict_json


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, big = rng.normal(0.5, 0.1, 8), rng.normal(0.5, 0.1, 200)
    a, b = mean_interval(small), mean_interval(big)
    assert a.lo < a.mean < a.hi and b.lo < b.mean < b.hi
    assert (b.hi - b.lo) < 0.5 * (a.hi - a.lo)
    assert a.n == 8 and b.n == 200
    # coverage: over many samples of n = 30 the 95 % interval holds the true mean about 95 % of the time
    cover = 0
    for i in range(200):
        iv = mean_interval(rng.normal(1.0, 1.0, 30), n_boot=400, seed=i)
        cover += iv.lo <= 1.0 <= iv.hi
    assert 0.88 <= cover / 200 <= 0.99


def test_seeds_are_averaged_within_a_prompt():
    # (prompts, seeds): the interval is over prompts, n counts prompts
    x = np.array([[0.1, 0.3], [0.5, 0.7], [0.9, 1.1]])
    iv = mean_interval(x)
    assert iv.n == 3 and iv.seeds == 2 and iv.mean == pytest.approx(0.6)
    assert "n = 3, 2 seeds each" in str(iv)
    one = mean_interval([0.4])
    assert one.lo == one.hi == one.mean == 0.4 and one.n == 1
    empty = mean_interval([])
    assert empty.n == 0 and math.isnan(empty.mean) and empty.fmt() == "n/a"
    # missing values (NaN) drop out, they do not poison the mean
    assert mean_interval([0.2, float("nan"), 0.4]).n == 2


def test_wilson_interval_at_the_edges():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and 0.65 < lo < 0.8
    p = proportion_interval([True] * 53 + [False] * 127)
    assert p.n == 180 and p.mean == pytest.approx(53 / 180) and p.method == "wilson"
    assert p.lo == pytest.approx(0.2327, abs=1e-3) and p.hi == pytest.approx(0.3648, abs=1e-3)


def test_compare_claims_only_what_the_intervals_support():
    rng = np.random.default_rng(1)
    base = rng.normal(0.3, 0.1, 16)
    clear = compare(base + 0.4, base, "top-k", "bottom-k")
    assert clear.verdict == ">" and clear.sentence.startswith("top-k > bottom-k: ")
    assert "n = 16" in clear.sentence and "difference" in clear.sentence
    noise = compare(base + rng.normal(0, 0.05, 16), base, "top-k", "bottom-k")
    assert noise.verdict == "~" and "not distinguishable at n = 16" in noise.sentence
    tiny = compare([0.9, 0.1], [0.1, 0.2], "a", "b")  # n = 2: far apart on average, but no evidence
    assert tiny.verdict == "~"
    agree = compare([0.9, 0.8, 0.85, 0.95, 0.9], [0.1, 0.2, 0.1, 0.15, 0.1], "top-k", "bottom-k")
    assert agree.verdict == "~" and "too few prompts to compare (n = 5, a claim needs 6)" in agree.sentence
    assert compare([0.9, 0.8, 0.85, 0.95, 0.9, 0.9], [0.1, 0.2, 0.1, 0.15, 0.1, 0.1]).verdict == ">"
    worse = compare(base, base + 0.4, "top-k", "bottom-k")
    assert worse.verdict == "<"
    with pytest.raises(ValueError, match="same prompts"):
        compare([1, 2, 3], [1, 2], "a", "b")
    d = clear.to_dict()
    assert d["verdict"] == ">" and d["a"]["n"] == 16
    assert Interval.from_dict(d["a"]) == clear.a


def test_strict_json_has_no_bare_nan():
    text = strict_json({"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2.5), "d": {"e": -math.inf}})
    doc = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert doc == {"a": None, "b": [1.0, None], "c": 2.5, "d": {"e": None}}
