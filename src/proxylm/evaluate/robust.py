"""Robustness on raw bytes: ReCode-style perturbed prompts (robust pass@k) and perturbed documents (BPB delta).

    code = robust_code(problems, complete, kinds=ALL_KINDS, seeds=range(5))
    code["robust_pass@1"], code["kinds"]["syntax"]["robust_drop@1"]
    text = robust_bpb(model, docs, kinds=ALL_KINDS, seeds=range(2))
    text["bpb_delta"]

Design choices:
- The perturbations are proxylm.evaluate.perturb's (ReCode's four families); the metrics are
  proxylm.evaluate.passk's: per family, robust pass@k is the worst case over seeds, robust drop
  is relative to the unperturbed (nominal) pass@k. The headline `robust_pass@k` is the mean
  over families, as a paper table's single robust column; each family is reported too.
- Generation and grading go through the same driver as `eval code` (codegen), with any
  `complete(prompts)` callable, so the nominal run here equals `eval code`'s.
- BPB delta: every document is perturbed per family and seed, scored with the same sliding
  window, and compared with the clean score: delta = BPB(perturbed) - BPB(clean), each over its
  own bytes. A positive delta is bytes the model finds harder after a meaning-preserving edit.
  Documents a family leaves unchanged (nothing to perturb) still count: they are part of the
  corpus a user evaluates, and `changed` says how many were edited.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from proxylm.evaluate.bpb import View, document_pairs, evaluate_bpb
from proxylm.evaluate.perturb import PerturbKind, perturb, perturb_problems

ALL_KINDS = tuple(PerturbKind)


def robust_code(
    problems: Sequence[Any],
    complete: Callable[[list[str]], list[str]],
    kinds: Iterable[PerturbKind] = ALL_KINDS,
    seeds: Iterable[int] = range(5),
    ks: Sequence[int] = (1,),
    n: int = 1,
    progress: bool = False,
    **grading: Any,
) -> dict[str, Any]:
    """Nominal pass@k, and per perturbation family robust pass@k / drop / relative over `seeds`.

    `grading` goes to codegen.evaluate (limits, workers, batch_size, stop)."""
    from proxylm.evaluate import codegen
    from proxylm.evaluate.passk import robust_passk

    def outcomes(batch: Sequence[Any]) -> dict[str, list[bool]]:
        return codegen.evaluate(batch, complete, n=n, ks=ks, progress=progress, **grading).by_task()

    seeds = list(seeds)
    nominal = outcomes(problems)
    per_kind = {}
    for kind in kinds:
        by_seed = {seed: outcomes(batch) for seed, batch in perturb_problems(problems, kind, seeds).items()}
        per_kind[kind.value] = robust_passk(by_seed, ks, nominal=nominal)
    result: dict[str, Any] = {}
    for k in ks:
        for metric in (f"robust_pass@{k}", f"robust_drop@{k}"):
            result[metric] = sum(m[metric] for m in per_kind.values()) / len(per_kind)
        result[f"pass@{k}"] = next(iter(per_kind.values()))[f"pass@{k}"]
    return {**result, "problems": len(problems), "seeds": seeds, "kinds": per_kind}


def robust_bpb(
    model: torch.nn.Module,
    docs: Iterable[Any],
    kinds: Iterable[PerturbKind] = ALL_KINDS,
    seeds: Iterable[int] = range(2),
    context: int | None = None,
    stride: int | None = None,
    view: View = View.RAW,
    compressor: Any = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Clean BPB and, per perturbation family, the BPB of perturbed copies and its delta."""
    clean_docs = list(document_pairs(docs))
    seeds = list(seeds)

    def bpb(pairs: list[tuple[str, bytes]]):
        return evaluate_bpb(model, pairs, context, stride, view=view, compressor=compressor, batch_size=batch_size)

    clean = bpb(clean_docs)
    per_kind: dict[str, Any] = {}
    for kind in kinds:
        runs = []
        for seed in seeds:
            perturbed = [(i, perturb(d.decode("utf-8", "replace"), kind, seed).encode("utf-8")) for i, d in clean_docs]
            changed = sum(p != d for (_, p), (_, d) in zip(perturbed, clean_docs))
            runs.append({"seed": seed, "bpb": bpb(perturbed).bpb, "changed": changed})
        deltas = [r["bpb"] - clean.bpb for r in runs]
        per_kind[kind.value] = {
            "bpb": sum(r["bpb"] for r in runs) / len(runs),
            "bpb_delta": sum(deltas) / len(deltas),
            "worst_bpb_delta": max(deltas),
            "seeds": runs,
        }
    deltas = [k["bpb_delta"] for k in per_kind.values()]
    return {
        "bpb": clean.bpb,
        "bpb_delta": sum(deltas) / len(deltas) if deltas else 0.0,
        "documents": len(clean.documents),
        "raw_bytes": clean.raw_bytes,
        "kinds": per_kind,
    }
