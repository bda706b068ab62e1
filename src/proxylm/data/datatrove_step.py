"""`prepare` on datatrove: pipeline steps that write proxylm shards, for local and Slurm executors.

    plan(PrepareConfig(corpus=CorpusConfig("data/*.jsonl"), compressor="bpe:vocab=8192", out="shards"), tasks=64)
    write = SlurmPipelineExecutor([JsonlReader("data/"), WriteShards("shards")], tasks=64, logging_dir="shards/tasks/logs", ...)
    SlurmPipelineExecutor([MergeManifest("shards")], tasks=1, depends=write, ...).run()   # runs `write` first

`proxylm prepare ... --executor datatrove --tasks N` runs the same with `LocalPipelineExecutor`
and proxylm's own corpus reader (`WriteShards(out, corpus=...)`), so its documents, ids, splits
and symbols are those of the plain prepare.

Design choices:
- The compressor is fitted (or loaded) once, before any task, by `plan` - the very fit the plain
  prepare makes - and saved with the plan into out/tasks/plan.json; every task encodes with it.
- Task r writes its own shards (`shard-<r>-<k>`) and, when done, a record out/tasks/task-<r>.json;
  shards appear atomically as in the plain prepare, so a killed task leaves nothing that loads,
  and datatrove's completion files (in the logging directory) skip finished tasks on a re-run.
- `MergeManifest` (or `merge_tasks`) runs after all tasks: it refuses while any record is missing,
  removes shards no record lists and writes the manifest, which is what `Shards.open` trusts.
- Documents from any datatrove reader pass the corpus's checks (size cap, blank, valid Unicode)
  and are counted by reason when skipped, like the plain prepare's. With `corpus=` instead of a
  reader, task r reads files r, r + N, ... of the proxylm corpus (datatrove's own way of sharding
  a source), so a corpus of one file gives one task all the work; `limit` is refused there (it
  counts documents in corpus order, which tasks do not share).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from proxylm.config import ConfigError
from proxylm.data.corpus import Corpus, CorpusConfig, Document, Skips, accept_text
from proxylm.data.prepare import PrepareConfig
from proxylm.data.prepare_tasks import TASKS_DIR, TaskPlan, merge_tasks, plan_tasks, run_task

LAYOUT = "datatrove"  # tasks take whole files (proxylm's reader) or whatever the reader gives them


def plan(config: PrepareConfig, tasks: int, *, progress: bool = False) -> TaskPlan:
    """Fit or load the compressor into config.out and write the plan; run this before the tasks."""
    if config.corpus.limit is not None:
        raise ConfigError("limit counts documents in corpus order, which datatrove tasks do not share; prepare without --executor datatrove")
    return plan_tasks(config, tasks, LAYOUT, progress=progress)


class WriteShards(PipelineStep):
    """Writes the documents of its task into proxylm shards under `out` (planned with `plan`).

    After a reader, it takes that reader's documents (their `id` and `text`); alone (`corpus=`),
    it reads its share of the proxylm corpus's files itself."""

    name = "proxylm shards"
    type = "💽 - WRITER"

    def __init__(self, out: str | Path, corpus: CorpusConfig | None = None) -> None:
        super().__init__()
        self.out = str(out)
        self.corpus = corpus

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        task_plan = TaskPlan.read(self.out)
        if world_size != task_plan.tasks:
            raise ConfigError(f"{self.out}: planned for {task_plan.tasks} tasks, the executor runs {world_size}")
        if data is None:
            if self.corpus is None:
                raise ConfigError("WriteShards needs a reader before it in the pipeline, or corpus=")
            corpus = Corpus(self.corpus)
            corpus.source = dataclasses.replace(corpus.source, files=corpus.source.files[rank::world_size])
            docs, skipped = iter(corpus), corpus.skipped_counts
        else:
            accepted = _Accepted(task_plan.config.corpus)
            docs, skipped = accepted.documents(data), accepted.counts
        with self.track_time():
            record = run_task(task_plan, rank, docs, skipped)
        for split, entries in record["splits"].items():
            self.stat_update(f"{split}_pieces", value=sum(e["documents"] for e in entries))
        return
        yield  # a generator: datatrove drains it


class MergeManifest(PipelineStep):
    """The final step (one task, after all `WriteShards` tasks): writes out/manifest.json."""

    name = "proxylm manifest"
    type = "💽 - WRITER"

    def __init__(self, out: str | Path) -> None:
        super().__init__()
        self.out = str(out)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if rank == 0:
            merge_tasks(self.out, executor=LAYOUT)
        return
        yield


class _Accepted:
    """A reader's documents that pass the corpus's checks, with the others counted by reason."""

    def __init__(self, config: CorpusConfig) -> None:
        self.config = config
        self.skipped = Skips(config.strict)

    def documents(self, data: DocumentsPipeline) -> Iterator[Document]:
        for doc in data:
            text = accept_text(doc.text, f"document {doc.id}", self.config, self.skipped.reject)
            if text is not None:
                yield Document(id=str(doc.id), data=text)

    def counts(self) -> dict[str, int]:
        return self.skipped.counts()


def run_local(config: PrepareConfig, tasks: int, *, progress: bool = False) -> dict:
    """`prepare --executor datatrove --tasks N`: plan, run the tasks with LocalPipelineExecutor
    (config.workers at a time), merge; returns the manifest. A re-run skips finished tasks."""
    start = time.perf_counter()
    task_plan = plan(config, tasks, progress=progress)
    executor = LocalPipelineExecutor(
        [WriteShards(config.out, corpus=config.corpus)],
        tasks=tasks,
        workers=min(config.workers, tasks),
        # one logging directory per plan: completions of another plan's tasks must not count
        logging_dir=str(Path(config.out) / TASKS_DIR / f"logs-{task_plan.fingerprint}"),
        start_method="spawn",  # the parent may hold tokenizer or torch thread pools
    )
    executor.run()
    return merge_tasks(config.out, start=start, executor=LAYOUT)
