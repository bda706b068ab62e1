"""`prepare` in tasks: datatrove (see proxylm.data.datatrove_step) or torchrun (`run_prepare_ranks`).

The compressor is fitted once and saved with a plan (out/tasks/plan.json); task r writes shards
`shard-<r>-<k>` and then a record out/tasks/task-<r>.json; `merge_tasks` writes the manifest once
every record is there. Contents equal the one-process prepare's; only the shard layout differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from proxylm import compress
from proxylm.config import ConfigError, from_dict, to_dict
from proxylm.data.corpus import Corpus, CorpusError, Document, SkipReason, Split, cut_pieces
from proxylm.data.prepare import (
    PrepareConfig,
    ShardPipeline,
    Tally,
    begin_prepare,
    build_manifest,
    finish_prepare,
    printer,
    remove_stale_shards,
)
from proxylm.data.shards import ShardsError, read_json, read_manifest
from proxylm.io import atomic_write_json

TASKS_DIR, PLAN = "tasks", "plan.json"  # out/tasks/plan.json and one task-<rank>.json per task



@dataclass(frozen=True)
class TaskPlan:
    """What the tasks of one multi-task prepare share, written to out/tasks/plan.json before any
    task starts: each task reads it, encodes with the compressor saved there, and leaves a record."""

    fingerprint: str
    tasks: int
    config: PrepareConfig
    state: dict[str, Any]  # the compressor's saved state: its config, fit id and fit figures
    corpus: dict[str, Any]  # what the manifest records about the source

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "tasks": self.tasks, "config": to_dict(self.config), "state": self.state, "corpus": self.corpus}

    @classmethod
    def read(cls, out: str | Path) -> "TaskPlan":
        data = read_json(Path(out) / TASKS_DIR / PLAN)
        if data is None:
            raise ShardsError(f"{out}: no {TASKS_DIR}/{PLAN}; plan the tasks first (proxylm.data.datatrove_step.plan)")
        return cls(data["fingerprint"], data["tasks"], from_dict(PrepareConfig, data["config"]), data["state"], data["corpus"])


def plan_tasks(config: PrepareConfig, tasks: int, layout: str, *, progress: bool = False) -> TaskPlan:
    """Fit or load the compressor once (exactly as `prepare` does) and write the plan the tasks read.
    `layout` names how tasks share the documents; it enters the fingerprint (it changes the shards)."""
    if tasks < 1:
        raise ConfigError(f"tasks must be >= 1, got {tasks}")
    corpus, out, state, fingerprint = begin_prepare(config, printer(progress), tasks=tasks, layout=layout)
    plan = TaskPlan(fingerprint, tasks, config, state, corpus.describe())
    atomic_write_json(out / TASKS_DIR / PLAN, plan.to_json())
    return plan


def run_task(plan: TaskPlan, rank: int, docs: Iterable[Document], skipped: Callable[[], dict[str, int]], workers: int = 1) -> dict[str, Any]:
    """Write task `rank`'s documents into its own shards (`shard-<rank>-<index>`) and record them in
    out/tasks/task-<rank>.json; a re-run reuses the task's finished shards that still match."""
    out = Path(plan.config.out)
    record_path = out / TASKS_DIR / _task_record(rank)
    record_path.unlink(missing_ok=True)
    compressor = compress.load(plan.state["config"], out)
    config = replace(plan.config, workers=workers)
    pipeline = ShardPipeline(config, out, compressor, plan.state["config"], plan.fingerprint, task=rank)
    with pipeline:
        for doc in docs:
            for piece in cut_pieces(doc, config.max_piece_bytes):
                pipeline.add(piece)
    record = {
        "fingerprint": plan.fingerprint,
        "rank": rank,
        "splits": {split.value: entries for split, entries in pipeline.entries.items()},
        "documents": {split.value: n for split, n in pipeline.source_documents.items()},
        "skipped": skipped(),
        "written": pipeline.written,
        "reused": pipeline.reused,
    }
    atomic_write_json(record_path, record)
    return record


def merge_tasks(out: str | Path, *, start: float | None = None, **run: Any) -> dict[str, Any]:
    """Once every task has finished: the manifest over all tasks' shards (written to out/manifest.json).
    `start` (a perf_counter time) dates the run's seconds; `run` adds to the manifest's run section."""
    start = time.perf_counter() if start is None else start
    out = Path(out)
    plan = TaskPlan.read(out)
    records = [_task_record_of(out, plan, rank) for rank in range(plan.tasks)]
    entries = {split: [e for r in records for e in r["splits"][split.value]] for split in Split}
    tally = Tally(
        documents={split: sum(r["documents"][split.value] for r in records) for split in Split},
        skipped={reason.value: sum(r["skipped"].get(reason.value, 0) for r in records) for reason in SkipReason},
        written=sum(r["written"] for r in records),
        reused=sum(r["reused"] for r in records),
    )
    if not any(e["documents"] for split in entries.values() for e in split):
        raise CorpusError(f"corpus '{plan.config.corpus.source}': no usable documents in any of {plan.tasks} tasks")
    remove_stale_shards(out, entries)
    alphabet_size = compress.load(plan.state["config"], out).alphabet_size
    manifest = build_manifest(plan.config, plan.state, plan.fingerprint, alphabet_size, entries, tally, plan.corpus, tasks=plan.tasks, **run)
    return finish_prepare(out, manifest, start)


def _task_record(rank: int) -> str:
    return f"task-{rank:05d}.json"


def _task_record_of(out: Path, plan: TaskPlan, rank: int) -> dict[str, Any]:
    record = read_json(out / TASKS_DIR / _task_record(rank))
    if record is None or record.get("fingerprint") != plan.fingerprint:
        raise ShardsError(
            f"{out}: task {rank} of {plan.tasks} has not finished ({TASKS_DIR}/{_task_record(rank)} is missing or from "
            "another run); run the tasks again (finished ones are skipped), then merge"
        )
    return record


def run_prepare_ranks(config: PrepareConfig, *, progress: bool = False) -> dict[str, Any]:
    """One rank of `torchrun ... proxylm prepare` (every rank calls it): rank r encodes documents r, r + W, r + 2W, ... into
    its own shards; rank 0 fits the compressor first and writes the manifest after the others.

    Every rank reads the whole corpus (reading is cheap next to a neural model's pass) and keeps
    its slice by document index, so the shards' documents and symbols are those of one process;
    only their order across shards differs. Barriers run on gloo: no tensors travel, and gloo
    works on GPU nodes too."""
    import torch.distributed as dist

    start = time.perf_counter()
    own_group = not dist.is_initialized()
    if own_group:
        # A rank's slice of a neural prepare can take hours; torchrun stops every rank when one fails.
        dist.init_process_group("gloo", timeout=timedelta(days=1))
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        if rank == 0:
            plan_tasks(config, world, "documents", progress=progress)  # fits a trainable compressor once
        dist.barrier()
        plan = TaskPlan.read(config.out)
        corpus = Corpus(plan.config.corpus)
        mine = (doc for i, doc in enumerate(corpus) if i % world == rank)
        # every rank sees every reject; rank 0 alone reports them
        run_task(plan, rank, mine, lambda: corpus.skipped_counts() if rank == 0 else {}, workers=plan.config.workers)
        dist.barrier()
        if rank == 0:
            merge_tasks(config.out, start=start, executor="torchrun")
        dist.barrier()
        return read_manifest(Path(config.out))
    finally:
        if own_group:
            dist.destroy_process_group()
