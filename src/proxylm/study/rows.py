"""The study's results grouped for reporting: one Row per (size, arm) over its seeds, the held-out
sets a result was scored on, seed-averaged learning curves, and differences paired by seed. report.py writes tables and
findings from them, figures.py plots."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from proxylm.study.config import Arm


@dataclass
class Row:
    """One (size, arm) over its seeds."""

    size: str
    arm: Arm
    results: list[dict[str, Any]]

    @property
    def n(self) -> int:
        return len(self.results)

    def values(self, *path: str) -> list[float]:
        return list(self.by_seed(*path).values())

    def by_seed(self, *path: str) -> dict[int, float]:
        """seed -> the value at `path`, for the seeds whose result has one."""
        return {r["seed"]: float(value) for r in self.results if (value := dig(r, path)) is not None}

    def mean(self, *path: str) -> float | None:
        values = self.values(*path)
        return statistics.fmean(values) if values else None

    def std(self, *path: str) -> float | None:
        values = self.values(*path)
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def bpb(self) -> float:
        return self.mean("bpb")

    @property
    def train_wall_s(self) -> float | None:
        """Mean training wall time per seed: the whole training call, or the time in steps summed over every process
        where that is longer (a trial resumed from a checkpoint; wall_s times only its last process)."""
        return mean_of([max(r["train"].get("wall_s") or 0.0, r["train"].get("train_time_s") or 0.0) or None for r in self.results])

    @property
    def eval_s(self) -> float | None:
        """Mean evaluation time per seed."""
        return mean_of([r.get("eval_time_s") or r.get("eval_wall_s") for r in self.results])

    @property
    def params(self) -> float | None:
        return self.mean("params")

    def code_sets(self) -> list[str]:
        """The real-code sets any of this row's results was scored on."""
        return list(dict.fromkeys(name for r in self.results for name in r.get("code") or {}))

    def summary(self) -> dict[str, Any]:
        bpbs = self.values("bpb")
        curve = mean_curve(self)
        return {
            "size": self.size, "arm": self.arm.value, "seeds": sorted(r["seed"] for r in self.results),
            "bpb_mean": self.bpb, "bpb_std": self.std("bpb"), "bpb_min": min(bpbs), "bpb_max": max(bpbs),
            "code": {name: {"bpb_mean": self.mean(*bpb_path(name)), "bpb_std": self.std(*bpb_path(name)),
                            "documents": self.mean("code", name, "documents"), "raw_bytes": self.mean("code", name, "raw_bytes")}
                     for name in self.code_sets()},
            "steps": self.mean("train", "steps"), "flops": self.mean("train", "flops"),
            "symbols": self.mean("train", "symbols"), "raw_bytes": self.mean("train", "raw_bytes"),
            "train_time_s": self.mean("train", "train_time_s"), "train_wall_s": self.train_wall_s, "eval_s": self.eval_s,
            "params": self.params,
            "curve": [{"step": step, "flops": flops, "raw_bytes": raw, "bpb": bpb}
                      for step, flops, raw, bpb in zip(curve.steps, curve.flops, curve.raw_bytes, curve.bpb)],
            "translation_byte_accuracy": self.mean("translation", "byte_accuracy"),
            "translation_exact_match": self.mean("translation", "exact_match"),
        }


STDLIB = "stdlib"  # the corpus's held-out documents, in tables and findings
CODE_SET_TITLES = {"humaneval": "HumanEval", "mbpp": "MBPP"}


def dig(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def mean_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def bpb_path(held_out: str) -> tuple[str, ...]:
    """Where a result holds its BPB on a held-out set (STDLIB or a code set's name)."""
    return ("bpb",) if held_out == STDLIB else ("code", held_out, "bpb")


def title(held_out: str) -> str:
    return CODE_SET_TITLES.get(held_out, held_out)


def held_out_sets(rows: list[Row]) -> list[str]:
    """STDLIB, then every code set some result was scored on."""
    return [STDLIB, *dict.fromkeys(name for row in rows for name in row.code_sets())]


@dataclass
class MeanCurve:
    """A row's curve, seeds averaged: the i-th point is the mean of every seed's i-th point."""

    steps: list[float | None]
    flops: list[float | None]
    raw_bytes: list[float | None]  # None where a seed's point records none (results from before they did)
    bpb: list[float | None]

    @property
    def has_raw_bytes(self) -> bool:
        return bool(self.raw_bytes) and None not in self.raw_bytes


def mean_curve(row: Row) -> MeanCurve:
    """Seed-averaged curve points, for the points every seed has (raw-only runs of different seeds
    take different steps, so points are matched by rank, not step)."""
    curves = [r.get("curve") or [] for r in row.results]
    points = min(len(c) for c in curves) if curves else 0

    def mean(key: str, i: int) -> float | None:
        return mean_of([c[i].get(key) for c in curves]) if all(c[i].get(key) is not None for c in curves) else None

    return MeanCurve(*([mean(key, i) for i in range(points)] for key in ("step", "flops", "raw_bytes", "bpb")))


@dataclass(frozen=True)
class Difference:
    """BPB(a) - BPB(b) paired by seed: arms share each seed's data order and initial weights, so
    the seed-to-seed spread both rows share cancels in d_s = BPB_a(s) - BPB_b(s)."""

    seeds: list[int]  # the seeds both rows have
    mean_a: float | None  # a's mean over those seeds
    mean_b: float | None
    mean: float | None  # mean of d_s; None without a common seed
    se: float | None  # sd(d) / sqrt(n); None under two common seeds

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def resolved(self) -> bool:
        return self.se is not None and abs(self.mean) > 2 * self.se

    def text(self, unit: str = "") -> str:
        """'+0.0123 ± 0.0040 (paired, n=3)', or what is missing."""
        if self.mean is None:
            return "no seed in common"
        spread = f" ± {self.se:.4f}{unit} (paired, n={self.n})" if self.se is not None else f"{unit} (one common seed)"
        return f"{self.mean:+.4f}{spread}"


def paired(va: dict[int, float], vb: dict[int, float]) -> Difference:
    """seed -> value of a minus seed -> value of b, over the seeds both have."""
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        return Difference([], None, None, None, None)
    d = [va[s] - vb[s] for s in seeds]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None
    return Difference(seeds, statistics.fmean(va[s] for s in seeds), statistics.fmean(vb[s] for s in seeds), statistics.fmean(d), se)


def alignment(row: Row) -> Difference:
    """The translation probe's BPB of raw bytes given their compressed view minus without it,
    paired by seed: negative where the model reads the compressed view."""
    return paired(row.by_seed("translation", "bpb_given_compressed"), row.by_seed("translation", "raw_bpb"))
