"""Sampler invariants: sums hit the target, bounds hold, weights are monotone, reruns are identical."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus.sampler import DROP_REASONS, KEPT, SelectionConfig, hash_prefix, rank_by_score, select
from scoring.errors import ConfigError


def corpus(n: int, seed: int = 0, dup_every: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    texts = [f"doc {i}" for i in range(n)]
    if dup_every:
        texts = [texts[i - i % dup_every] for i in range(n)]
    return {
        "score": rng.normal(size=n).round(2),  # rounded: plenty of ties
        "teacher_logprob": rng.normal(-3, 1, size=n),
        "n_tokens": rng.integers(1, 200, size=n),
        "ok": np.ones(n, dtype=bool),
        "content_hash": hash_prefix([hashlib.sha256(t.encode()).hexdigest() for t in texts]),
    }


@st.composite
def corpora(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(1, 60))
    scores = draw(st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.1, 1.0, 3.0]), min_size=n, max_size=n))
    tokens = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n))
    ok = draw(st.lists(st.booleans().map(lambda b: b or True), min_size=n, max_size=n))
    ids = draw(st.lists(st.integers(0, 80), min_size=n, max_size=n))  # repeats = duplicates
    return {
        "score": np.array(scores),
        "teacher_logprob": np.array(scores) - 3.0,
        "n_tokens": np.array(tokens),
        "ok": np.array(ok),
        "content_hash": hash_prefix([hashlib.sha256(str(i).encode()).hexdigest() for i in ids]),
    }


@given(data=corpora(), ratio=st.floats(0.01, 1.0), seed=st.integers(0, 2**32))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_top_fraction_invariants(data: dict[str, np.ndarray], ratio: float, seed: int) -> None:
    sel = select(SelectionConfig(ratio=ratio, drop_duplicates=False), seed=seed, **data)
    n = len(data["score"])
    assert sel.repeats.sum() == int(np.ceil(round(ratio * n, 9)))
    assert set(np.unique(sel.repeats)) <= {0, 1}
    np.testing.assert_array_equal(sel.weight, sel.repeats.astype(float))
    kept, dropped = data["score"][sel.repeats == 1], data["score"][sel.repeats == 0]
    if len(kept) and len(dropped):
        assert kept.min() >= dropped.max()
        assert sel.threshold == kept.min()
    again = select(SelectionConfig(ratio=ratio, drop_duplicates=False), seed=seed + 1, **data)
    np.testing.assert_array_equal(again.repeats, sel.repeats)  # top-fraction draws nothing


def test_top_fraction_does_not_depend_on_input_order() -> None:
    data = corpus(500, seed=3)
    cfg = SelectionConfig(ratio=0.3)
    sel = select(cfg, **data)
    perm = np.random.default_rng(0).permutation(500)
    shuffled = select(cfg, **{k: v[perm] for k, v in data.items()})
    np.testing.assert_array_equal(shuffled.repeats, sel.repeats[perm])


def test_default_is_top_half() -> None:
    sel = select(SelectionConfig(), **corpus(101))
    assert sel.repeats.sum() == 51
    assert sel.dropped == {"not_selected": 50}


@given(data=corpora(), frac=st.floats(0.01, 1.0))
@settings(max_examples=100, deadline=None)
def test_keep_tokens_is_the_best_prefix_that_fits(data: dict[str, np.ndarray], frac: float) -> None:
    total = int(data["n_tokens"].sum())
    budget = max(1, int(total * frac))
    sel = select(SelectionConfig(keep_tokens=budget, drop_duplicates=False), **data)
    used = int((sel.repeats * data["n_tokens"]).sum())
    assert used <= budget
    dropped = np.flatnonzero(sel.repeats == 0)
    if len(dropped):
        kept_scores = data["score"][sel.repeats == 1]
        if len(kept_scores):
            assert kept_scores.min() >= data["score"][dropped].max()
        # The next document in rank order did not fit.
        ranked = rank_by_score(np.arange(len(data["score"])), data["score"], data["content_hash"])
        nxt = ranked[len(ranked) - len(dropped)]
        assert sel.repeats[nxt] == 0 and used + data["n_tokens"][nxt] > budget


@given(
    data=corpora(),
    temperature=st.floats(0.05, 5.0),
    lo=st.sampled_from([0.0, 0.1, 0.5]),
    hi=st.sampled_from([1.5, 2.0, 4.0, 7.3]),
    share=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_soft_documents_invariants(
    data: dict[str, np.ndarray], temperature: float, lo: float, hi: float, share: float, seed: int
) -> None:
    n = len(data["score"])
    reach_lo, reach_hi = int(np.ceil(lo * n)), int(np.floor(hi * n))
    target = max(1, reach_lo + int(share * (reach_hi - reach_lo)))
    if target > reach_hi or target < lo * n:
        return
    cfg = SelectionConfig(
        method="soft",
        temperature=temperature,
        min_weight=lo,
        max_weight=hi,
        target_documents=target,
        drop_duplicates=False,
    )
    sel = select(cfg, seed=seed, **data)
    assert sel.repeats.sum() == target, "hits the target exactly"
    assert np.all((sel.weight >= lo - 1e-12) & (sel.weight <= hi + 1e-12)), "bounds hold"
    assert np.all(sel.repeats >= np.floor(sel.weight + 1e-9) - 1) and np.all(
        sel.repeats <= np.ceil(sel.weight - 1e-9) + 1
    )
    assert np.all(np.abs(sel.repeats - sel.weight) < 1 + 1e-9), "each is floor or ceil of its weight"
    order = np.argsort(data["score"], kind="stable")
    assert np.all(np.diff(sel.weight[order]) >= -1e-12), "weights are monotone in score"
    again = select(cfg, seed=seed, **data)
    np.testing.assert_array_equal(again.repeats, sel.repeats)
    np.testing.assert_array_equal(again.weight, sel.weight)


@given(data=corpora(), share=st.floats(0.05, 2.0), seed=st.integers(0, 1000))
@settings(max_examples=150, deadline=None)
def test_soft_tokens_lands_within_one_document_below_target(
    data: dict[str, np.ndarray], share: float, seed: int
) -> None:
    tokens = data["n_tokens"]
    target = max(1, int(tokens.sum() * share))
    cfg = SelectionConfig(method="soft", max_weight=4.0, target_tokens=target, drop_duplicates=False)
    sel = select(cfg, seed=seed, **data)
    used = int((sel.repeats * tokens).sum())
    assert used <= target
    assert target - used < tokens.max()


def test_soft_repeats_are_unbiased_estimates_of_weight() -> None:
    data = corpus(40, seed=1)
    cfg = SelectionConfig(method="soft", temperature=0.7, max_weight=3.0, target_documents=50)
    runs = np.stack([select(cfg, seed=s, **data).repeats for s in range(400)])
    weight = select(cfg, **data).weight
    assert np.all(runs.sum(axis=1) == 50)
    np.testing.assert_allclose(runs.mean(axis=0), weight, atol=0.12)


def test_soft_down_weights_easy_and_repeats_hard() -> None:
    data = corpus(1000, seed=2)
    sel = select(SelectionConfig(method="soft", temperature=0.5, min_weight=0.1, max_weight=5.0), **data)
    assert sel.repeats.sum() == 1000  # default target: as many documents as are eligible
    best, worst = np.argmax(data["score"]), np.argmin(data["score"])
    assert sel.weight[best] == 5.0 and sel.repeats[best] == 5
    assert sel.weight[worst] == pytest.approx(0.1)


def test_guards() -> None:
    data = corpus(12, dup_every=3)  # docs 0,1,2 share a text, 3,4,5, ...
    data["ok"][1] = False  # not-ok docs may carry NaN
    data["score"][1] = np.nan
    data["teacher_logprob"][:] = -3.0
    data["teacher_logprob"][6] = -20.0
    cfg = SelectionConfig(ratio=1.0, min_teacher_logprob=-10.0)
    sel = select(cfg, **data)
    reasons = [DROP_REASONS[r] for r in sel.reason]
    assert reasons == [
        "kept",
        "not_ok",
        "duplicate",
        "kept",
        "duplicate",
        "duplicate",
        "below_teacher_floor",
        "kept",
        "duplicate",
        "kept",
        "duplicate",
        "duplicate",
    ]
    assert sel.dropped == {"not_ok": 1, "below_teacher_floor": 1, "duplicate": 6}
    assert (sel.reason == KEPT).sum() == sel.repeats.sum() == 4


def test_nan_score_on_an_ok_row_is_not_ok() -> None:
    data = corpus(4)
    data["score"][2] = np.nan
    sel = select(SelectionConfig(ratio=1.0), **data)
    assert sel.repeats.tolist() == [1, 1, 0, 1]


def test_proxy_scored_rows_are_selected_on_their_score_and_refused_by_a_teacher_floor() -> None:
    # A proxy scores without log-probs (NaN teacher_logprob): such a document is eligible like any other.
    data = corpus(6)
    data["score"][:] = [0.5, 2.0, -1.0, 1.0, 0.0, 3.0]
    data["teacher_logprob"][[1, 4]] = np.nan
    sel = select(SelectionConfig(ratio=0.5), **data)
    assert sel.repeats.tolist() == [0, 1, 0, 1, 0, 1]
    assert sel.threshold == 1.0
    # A floor is on the teacher's log-prob: it refuses rows that have none, rather than guess.
    with pytest.raises(ConfigError, match=r"min_teacher_logprob=-10\.0 needs the teacher's log-prob of every document, but 2 were"):
        select(SelectionConfig(ratio=0.5, min_teacher_logprob=-10.0), **data)
    # ...unless no eligible row lacks one (a not-ok row may carry NaN anywhere).
    data["ok"][[1, 4]] = False
    sel = select(SelectionConfig(ratio=0.5, min_teacher_logprob=-10.0), **data)
    assert sel.dropped == {"not_ok": 2, "not_selected": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 0.0}, r"ratio=0\.0 must be in \(0, 1\]"),
        ({"ratio": 1.5}, r"ratio=1\.5"),
        ({"ratio": 0.5, "keep_tokens": 10}, "ratio=0.5 and keep_tokens=10 are exclusive"),
        ({"method": "soft", "temperature": 0.0}, "temperature=0.0 must be a positive"),
        ({"method": "soft", "temperature": -1.0}, "temperature=-1.0"),
        (
            {"method": "soft", "min_weight": 2.0, "max_weight": 1.0},
            "max_weight=1.0 must be finite and above min_weight=2.0",
        ),
        (
            {"method": "soft", "target_documents": 5, "target_tokens": 9},
            "target_documents=5 and target_tokens=9",
        ),
        ({"temperature": 2.0}, "temperature=2.0 does not apply to method='top-fraction'"),
        ({"method": "soft", "ratio": 0.3}, "ratio=0.3 does not apply to method='soft'"),
        ({"method": "median"}, "method"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_config_errors_name_the_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SelectionConfig(**kwargs)


def test_impossible_requests_against_the_data() -> None:
    data = corpus(10)
    total = int(data["n_tokens"].sum())
    with pytest.raises(ConfigError, match=f"keep_tokens={total + 1} exceeds the {total} tokens"):
        select(SelectionConfig(keep_tokens=total + 1), **data)
    with pytest.raises(ConfigError, match=r"target_documents=41 is out of reach .*max_weight=4\.0"):
        select(SelectionConfig(method="soft", target_documents=41), **data)
    with pytest.raises(ConfigError, match="target_documents=2 is out of reach"):
        select(SelectionConfig(method="soft", min_weight=0.5, target_documents=2), **data)


def test_config_is_frozen_and_round_trips() -> None:
    cfg = SelectionConfig(method="soft", temperature=0.3, target_tokens=100)
    with pytest.raises(Exception, match="frozen"):
        cfg.temperature = 1.0  # type: ignore[misc]
    assert SelectionConfig.model_validate(cfg.model_dump()) == cfg


def test_empty_and_all_dropped() -> None:
    data = corpus(3)
    data["ok"][:] = False
    for cfg in (SelectionConfig(), SelectionConfig(method="soft")):
        sel = select(cfg, **data)
        assert sel.repeats.sum() == 0 and sel.threshold is None
        assert sel.dropped == {"not_ok": 3}


def test_exact_sum_is_exact_and_the_same_over_any_split() -> None:
    from fractions import Fraction

    from corpus.sampler import SUM_SCALE, exact_sum, sum_value

    rng = np.random.default_rng(4)
    values = np.concatenate([rng.random(5000) * 10.0 ** rng.integers(-300, 300, 5000), [0.0, 5e-324, 1.7e308]])
    whole = exact_sum(values)
    assert Fraction(whole, 2**SUM_SCALE) == sum(Fraction(float(v)) for v in values)
    cuts = np.sort(rng.integers(0, len(values), 7))
    assert sum(exact_sum(part) for part in np.split(values, cuts)) == whole
    assert sum_value(whole) == math.fsum(values.tolist())  # correctly rounded, as fsum


def test_soft_scale_is_the_same_however_many_bisection_steps_a_pass_answers() -> None:
    from corpus.sampler import exact_sum, soft_weights, solve_log_scale

    rng = np.random.default_rng(2)
    z = -np.abs(rng.normal(0, 2, 1000))
    cfg = SelectionConfig(method="soft", max_weight=3.0, target_documents=700)
    calls: list[int] = []

    def totals(points: list[float]) -> list[int]:
        calls.append(len(points))
        return [exact_sum(soft_weights(z, p, cfg)) for p in points]

    plain = solve_log_scale(float(z.min()), 1000.0, 1000, 700, cfg, totals, depth=1)
    passes = len(calls)
    calls.clear()
    assert solve_log_scale(float(z.min()), 1000.0, 1000, 700, cfg, totals, depth=4) == plain
    assert len(calls) == math.ceil(passes / 4) and calls[0] == 15
