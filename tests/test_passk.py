"""pass@k (Chen et al.'s unbiased estimator) and ReCode's robust metrics."""

from __future__ import annotations

import itertools
from math import comb

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxylm.evaluate.passk import estimate, feasible_ks, pass_at_k, robust_passk


@given(st.integers(1, 30).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_estimate_is_one_minus_the_chance_that_k_draws_all_fail(nck):
    n, c, k = nck
    assert estimate([n], [c], k)[0] == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_estimate_matches_enumerating_every_k_subset():
    outcomes = [True, False, False, True, False]
    for k in range(1, 6):
        subsets = list(itertools.combinations(outcomes, k))
        assert estimate([5], [2], k)[0] == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_1_is_the_mean_share_of_correct_samples():
    results = {"a": [True, False, True, True], "b": [False] * 4, "c": [True] * 4}
    assert pass_at_k(results, [1]) == {"pass@1": pytest.approx((0.75 + 0 + 1) / 3)}


def test_k_larger_than_the_samples_is_refused_and_feasible_ks_filters_it():
    results = {"a": [True, False], "b": [True, True, False]}
    with pytest.raises(ValueError, match="pass@3 needs at least 3 samples per task"):
        pass_at_k(results, [3])
    assert feasible_ks(results, [1, 2, 3, 10]) == [1, 2]


def test_empty_results_are_refused():
    with pytest.raises(ValueError, match="no tasks"):
        pass_at_k({}, [1])
    with pytest.raises(ValueError, match="task a has no samples"):
        pass_at_k({"a": []}, [1])


def test_robust_pass_is_the_worst_case_over_seeds_for_greedy_samples():
    nominal = {"a": [True], "b": [True], "c": [False], "d": [False]}
    by_seed = {
        0: {"a": [True], "b": [True], "c": [False], "d": [True]},
        1: {"a": [True], "b": [False], "c": [False], "d": [True]},
    }
    out = robust_passk(by_seed, [1], nominal=nominal)
    assert out["robust_pass@1"] == pytest.approx(2 / 4)  # a and d pass under every seed
    assert out["pass@1"] == pytest.approx(2 / 4)
    assert out["robust_drop@1"] == pytest.approx(0.0)
    assert out["robust_relative@1"] == pytest.approx(2 / 4)  # b broke under seed 1, d was fixed by both


def test_robust_pass_takes_the_worst_case_per_sample_index():
    by_seed = {
        0: {"a": [True, True, False, True]},
        1: {"a": [True, False, True, True]},
    }
    # indices 0 and 3 are correct under both seeds: robust count 2 of 4
    assert robust_passk(by_seed, [1, 2])["robust_pass@1"] == pytest.approx(2 / 4)
    assert robust_passk(by_seed, [1, 2])["robust_pass@2"] == pytest.approx(1 - comb(2, 2) / comb(4, 2))


@given(st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=4))
def test_robust_pass_never_exceeds_any_single_seed(seed_outcomes):
    by_seed = {s: {"t": outcomes} for s, outcomes in enumerate(seed_outcomes)}
    robust = robust_passk(by_seed, [1, 3])
    for k in (1, 3):
        assert robust[f"robust_pass@{k}"] <= min(pass_at_k(r, [k])[f"pass@{k}"] for r in by_seed.values()) + 1e-12


def test_robust_drop_is_relative_to_nominal_pass():
    nominal = {"a": [True], "b": [True], "c": [True], "d": [False]}
    by_seed = {0: {"a": [True], "b": [False], "c": [True], "d": [False]}}
    out = robust_passk(by_seed, [1], nominal=nominal)
    assert out["robust_drop@1"] == pytest.approx((3 / 4 - 2 / 4) / (3 / 4))


def test_seeds_must_grade_the_same_tasks_and_sample_counts():
    with pytest.raises(ValueError, match="different tasks"):
        robust_passk({0: {"a": [True]}, 1: {"b": [True]}})
    with pytest.raises(ValueError, match="task a: 2 samples"):
        robust_passk({0: {"a": [True]}, 1: {"a": [True, False]}})
    with pytest.raises(ValueError, match="at least one seed"):
        robust_passk({})
