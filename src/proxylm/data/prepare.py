"""`prepare`: corpus + compressor -> shards (see shards.py for the layout) and manifest.json.

    manifest = prepare("stdlib", "bpe:vocab=8192", "runs/stdlib-bpe", workers=2)

Design choices:
- Streaming: the main process reads documents, cuts long ones into pieces (`cut_pieces`), routes
  each piece to its document's split by a hash of the document's id, and cuts each split into shards of at most `shard_docs` documents / `shard_bytes` bytes.
  Workers only encode; at most a few chunks are in flight, so memory is bounded by about two
  shards' bytes whatever the corpus size.
- Workers are spawned processes (not forked: the parent may hold tokenizer thread pools) that
  rebuild the compressor from the files it saved into the output directory, exactly as
  `Shards.compressor()` will later; results come back in order, so the shards do not depend on
  the number of workers.
  With one worker, a thread of the main process encodes while the main thread reads and writes.
- Trainable compressors are fitted on a bounded sample of the TRAIN split only: the documents
  with the smallest hash of their id, up to `fit_bytes` (a seeded uniform sample in one pass).
  A fitted compressor is saved with a random fit id; a re-run with the same options reloads it.
- Idempotent: every shard records the run's fingerprint (options, compressor config, fit id)
  and a hash of its documents; a re-run reuses the shards that match and rewrites the others.
- Tasks (datatrove, torchrun): see proxylm.data.prepare_tasks; the same pipeline, one per task.
- Atomic: shards appear by directory rename; the manifest is written last and deleted before
  anything it lists is changed, so a prepare killed at any moment never leaves a directory
  that `Shards.open` accepts with partial or mixed data.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from proxylm import compress
from proxylm.compress import Compressor, CompressorError
from proxylm.data.corpus import (
    DEFAULT_MAX_DOC_BYTES,
    DEFAULT_MAX_PIECE_BYTES,
    Corpus,
    CorpusConfig,
    CorpusError,
    Document,
    Split,
    cut_pieces,
    iter_split,
    sample_documents,
    split_of,
)
from proxylm.data.shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ContentHash,
    ShardWriter,
    finished_shard,
    read_json,
    remove_temporaries,
    shard_name,
)
from proxylm.config import ConfigError
from proxylm.io import atomic_write_json
from proxylm.vocab import id_dtype

COMPRESSOR_STATE = "compressor.json"  # the fitted compressor's config and fit id, for re-runs
CHUNK_BYTES = 1 << 20  # unit of work sent to a worker: large enough to amortise pickling
CHUNK_DOCS = 512


@dataclass
class PrepareConfig:
    corpus: CorpusConfig
    """Where the documents come from (source, field, size cap, strict, limit)."""
    compressor: str
    """Compressor spec, e.g. `gzip`, `bpe:vocab=8192` (see proxylm.compress)."""
    out: str
    """Output directory; created if missing, reused (resumed) if it holds an earlier run."""
    workers: int = 1
    """Encoding processes; 1 encodes in the main process."""
    val_fraction: float = 0.02
    """Share of documents in the validation split, chosen by a hash of each document's id."""
    shard_docs: int = 4096
    """A shard closes at this many documents ..."""
    shard_bytes: int = 64_000_000
    """... or at this many raw bytes, whichever comes first."""
    fit_bytes: int = 32_000_000
    """Trainable compressors are fitted on a hash-sampled part of the train split up to this many bytes."""
    max_piece_bytes: int | None = DEFAULT_MAX_PIECE_BYTES
    """Documents longer than this are stored as pieces of at most this many bytes (None: whole)."""

    def __post_init__(self) -> None:
        if not self.compressor or not str(self.compressor).strip():
            raise ConfigError("compressor spec is empty; e.g. --compressor gzip or --compressor bpe:vocab=8192")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_docs < 1 or self.shard_bytes < 1:
            raise ConfigError(f"shard_docs and shard_bytes must be >= 1, got {self.shard_docs}, {self.shard_bytes}")
        if self.fit_bytes < 1:
            raise ConfigError(f"fit_bytes must be >= 1, got {self.fit_bytes}")
        if self.max_piece_bytes is not None and self.max_piece_bytes < 16:
            raise ConfigError(f"max_piece_bytes must be >= 16 or None, got {self.max_piece_bytes}")

    def fingerprint_data(self) -> dict[str, Any]:
        """Everything that changes what is written (not workers or strict)."""
        c = self.corpus
        return {
            "version": FORMAT_VERSION,
            "corpus": [c.source, c.kind.value, c.field, c.id_field, c.max_doc_bytes, c.limit],
            "compressor": self.compressor,
            "val_fraction": self.val_fraction,
            "shard": [self.shard_docs, self.shard_bytes],
            "fit_bytes": self.fit_bytes,
            "max_piece_bytes": self.max_piece_bytes,
        }


def prepare(
    corpus: str | Path | CorpusConfig,
    compressor_spec: str,
    out: str | Path,
    *,
    workers: int = 1,
    strict: bool = False,
    field: str = "text",
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES,
    limit: int | None = None,
    val_fraction: float = 0.02,
    shard_docs: int = 4096,
    shard_bytes: int = 64_000_000,
    fit_bytes: int = 32_000_000,
    max_piece_bytes: int | None = DEFAULT_MAX_PIECE_BYTES,
    progress: bool = False,
) -> dict[str, Any]:
    """Compress a corpus into shards under `out`; returns the manifest (also written to out/manifest.json)."""
    if not isinstance(corpus, CorpusConfig):
        corpus = CorpusConfig(source=str(corpus), field=field, max_doc_bytes=max_doc_bytes, strict=strict, limit=limit)
    config = PrepareConfig(
        corpus=corpus,
        compressor=compressor_spec,
        out=str(out),
        workers=workers,
        val_fraction=val_fraction,
        shard_docs=shard_docs,
        shard_bytes=shard_bytes,
        fit_bytes=fit_bytes,
        max_piece_bytes=max_piece_bytes,
    )
    return run_prepare(config, progress=progress)


def run_prepare(config: PrepareConfig, *, progress: bool = False) -> dict[str, Any]:
    """Prepare in this process and its workers (proxylm.data.prepare_tasks.run_prepare_ranks is the torchrun form)."""
    start = time.perf_counter()
    say = printer(progress)
    corpus, out, state, fingerprint = begin_prepare(config, say)
    saved = compress.load(state["config"], out)  # encode with what Shards.compressor() will give back
    pipeline = ShardPipeline(config, out, saved, state["config"], fingerprint)
    with pipeline, _progress_bar(corpus, progress) as bar:
        for doc in corpus:
            for piece in cut_pieces(doc, config.max_piece_bytes):
                pipeline.add(piece)
            bar.update(len(doc.data))
        bar.total = bar.n  # the size hint counts skipped files and JSON syntax too
    entries = pipeline.entries
    if not any(e["documents"] for split in entries.values() for e in split):
        raise CorpusError(f"corpus '{config.corpus.source}': no usable documents ({_skips(corpus)})")
    remove_stale_shards(out, entries)
    tally = Tally(pipeline.source_documents, corpus.skipped_counts(), pipeline.written, pipeline.reused)
    manifest = build_manifest(config, state, fingerprint, saved.alphabet_size, entries, tally, corpus.describe())
    return finish_prepare(out, manifest, start)


def begin_prepare(config: PrepareConfig, say: Callable[[str], None], **layout: Any) -> tuple[Corpus, Path, dict[str, Any], str]:
    """Open the corpus, fit or load the compressor into `out`; returns (corpus, out, compressor state,
    fingerprint). `layout` (how tasks share the corpus) enters the fingerprint: it changes the shards."""
    corpus = Corpus(config.corpus)  # resolves the source now: a missing path fails before any work
    compressor = compress.build(config.compressor)  # and so does a bad spec
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    base = _digest(config.fingerprint_data())
    state = ready_compressor(compressor, config, corpus, out, base, say)
    fingerprint = _digest({"base": base, "compressor": state["config"], "fit_id": state.get("fit_id")} | layout)
    if (read_json(out / MANIFEST) or {}).get("fingerprint") != fingerprint:
        invalidate_manifest(out)
    return corpus, out, state, fingerprint


def finish_prepare(out: Path, manifest: dict[str, Any], start: float) -> dict[str, Any]:
    manifest["run"]["seconds"] = round(time.perf_counter() - start, 3)
    manifest["run"]["bytes_per_s"] = round(manifest["raw_bytes"] / max(manifest["run"]["seconds"], 1e-9), 1)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


# ---- the compressor ----------------------------------------------------------------------------


def ready_compressor(
    compressor: Compressor, config: PrepareConfig, corpus: Corpus, out: Path, base: str, say: Callable[[str], None]
) -> dict[str, Any]:
    """Fit the compressor if it needs it and save its files into `out`; returns its saved state."""
    if compressor.ready:
        return {"config": compressor.save(out), "fit": None}
    saved = read_json(out / COMPRESSOR_STATE)
    if saved and saved.get("fingerprint") == base:
        say(f"reusing the {compressor.name} compressor fitted earlier in {out}")
        return saved
    invalidate_manifest(out)
    (out / COMPRESSOR_STATE).unlink(missing_ok=True)
    sample = sample_documents(iter_split(corpus, Split.TRAIN, config.val_fraction), salt="fit", max_bytes=config.fit_bytes)
    if not sample:
        raise CorpusError(f"corpus '{config.corpus.source}': no training documents to fit '{config.compressor}' on ({_skips(corpus)})")
    sample_bytes = sum(len(d.data) for d in sample)
    say(f"fitting {config.compressor} on {len(sample)} train documents ({sample_bytes / 1e6:.1f} MB)")
    t0 = time.perf_counter()
    compressor.fit([d.data for d in sample])
    fit = {"documents": len(sample), "bytes": sample_bytes, "seconds": round(time.perf_counter() - t0, 3)}
    state = {"fingerprint": base, "config": compressor.save(out), "fit_id": uuid.uuid4().hex, "fit": fit}
    atomic_write_json(out / COMPRESSOR_STATE, state)
    return state


def encode_documents(compressor: Compressor, datas: list[bytes]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(symbols in the compact dtype, side or None) per document, range-checked."""
    if hasattr(compressor, "encode_many_with_side"):  # batched with side info (the neural proxy)
        pairs = compressor.encode_many_with_side(datas)
    elif type(compressor).encode_with_side is not Compressor.encode_with_side:
        pairs = [compressor.encode_with_side(d) for d in datas]
    elif hasattr(compressor, "encode_many"):
        pairs = [(s, None) for s in compressor.encode_many(datas)]
    else:
        pairs = [(compressor.encode(d), None) for d in datas]
    alphabet = compressor.alphabet_size
    dtype = id_dtype(alphabet)
    return [(_compact(symbols, alphabet, dtype, compressor.name), side) for symbols, side in pairs]


def _compact(symbols: np.ndarray, alphabet: int, dtype: np.dtype, name: str) -> np.ndarray:
    arr = np.asarray(symbols)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= alphabet):
        raise CompressorError(f"{name}: encode returned a symbol outside [0, {alphabet})")
    return arr.astype(dtype, copy=False)


_WORKER_COMPRESSOR: Compressor | None = None


def _init_worker(config: dict[str, Any], directory: str) -> None:
    global _WORKER_COMPRESSOR
    _WORKER_COMPRESSOR = compress.load(config, Path(directory))


def _encode_in_worker(datas: list[bytes]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    assert _WORKER_COMPRESSOR is not None, "worker initialiser did not run"
    return encode_documents(_WORKER_COMPRESSOR, datas)


# ---- shards ------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """The shard a split is filling now.

    If a finished shard of the same run already sits under its name, documents are buffered
    until the shard is full and then compared with it (reuse or rewrite); otherwise they are
    streamed to the workers as they come, in chunks.
    """

    index: int
    writer: ShardWriter | None  # None while deciding whether an existing shard can be reused
    hasher: ContentHash = field(default_factory=ContentHash)
    buffered: list[Document] = field(default_factory=list)
    chunk: list[Document] = field(default_factory=list)
    chunk_bytes: int = 0
    docs: int = 0
    nbytes: int = 0


class ShardPipeline:
    """Routes documents to per-split shards, encodes them (in workers), writes them in order."""

    def __init__(
        self, config: PrepareConfig, out: Path, compressor: Compressor, saved: dict, fingerprint: str, task: int | None = None
    ) -> None:
        self.config = config
        self.task = task  # a task of a multi-task prepare names its shards after itself
        self.out = out
        self.compressor = compressor
        self.fingerprint = fingerprint
        self.symbol_dtype = id_dtype(compressor.alphabet_size)
        self.slots: dict[Split, _Slot | None] = {split: None for split in Split}
        self.next_index = {split: 0 for split in Split}
        self.metas: dict[Split, dict[int, dict[str, Any]]] = {split: {} for split in Split}
        self.pending: deque[tuple[ShardWriter, Split, int, list[Document], Future, bool]] = deque()
        self.open_writers: list[ShardWriter] = []
        self.written = self.reused = 0
        self.source_documents = {split: 0 for split in Split}  # documents, as opposed to stored pieces
        self.saved = saved
        self.pool: Executor | None = None  # started on the first chunk: a full resume needs none
        self.max_in_flight = 2 * config.workers
        for split in Split:
            remove_temporaries(out / split.value, task)

    def __enter__(self) -> "ShardPipeline":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for split in Split:
                    if self.slots[split] is not None:
                        self._close_slot(split)
                self._drain(0)
        finally:
            self._shutdown(aborted=exc_type is not None or bool(self.open_writers))

    @property
    def entries(self) -> dict[Split, list[dict[str, Any]]]:
        return {split: [metas[i] | {"name": shard_name(i, self.task)} for i in sorted(metas)] for split, metas in self.metas.items()}

    def add(self, doc: Document) -> None:
        split = split_of(doc.id, self.config.val_fraction)  # the document's id: its pieces stay together
        slot = self.slots[split] or self._open_slot(split)
        slot.hasher.update(doc.key, doc.data)
        slot.docs += 1
        self.source_documents[split] += doc.piece in (None, 0)
        slot.nbytes += len(doc.data)
        if slot.writer is None:
            slot.buffered.append(doc)
        else:
            self._stream(slot, split, doc)
        if slot.docs >= self.config.shard_docs or slot.nbytes >= self.config.shard_bytes:
            self._close_slot(split)

    def _open_slot(self, split: Split) -> _Slot:
        index = self.next_index[split]
        self.next_index[split] += 1
        previous = finished_shard(self.out / split.value, shard_name(index, self.task), self.fingerprint)
        slot = _Slot(index=index, writer=None if previous else self._new_writer(split, index))
        self.slots[split] = slot
        return slot

    def _new_writer(self, split: Split, index: int) -> ShardWriter:
        invalidate_manifest(self.out)  # a shard it may list is about to change
        writer = ShardWriter(self.out / split.value, shard_name(index, self.task), self.symbol_dtype, {"fingerprint": self.fingerprint})
        self.open_writers.append(writer)
        return writer

    def _stream(self, slot: _Slot, split: Split, doc: Document) -> None:
        slot.chunk.append(doc)
        slot.chunk_bytes += len(doc.data)
        if slot.chunk_bytes >= CHUNK_BYTES or len(slot.chunk) >= CHUNK_DOCS:
            self._submit(slot, split, last=False)

    def _close_slot(self, split: Split) -> None:
        slot = self.slots[split]
        self.slots[split] = None
        content = slot.hasher.hexdigest()
        if slot.writer is None:
            previous = finished_shard(self.out / split.value, shard_name(slot.index, self.task), self.fingerprint)
            if previous and previous.get("content") == content:
                self.metas[split][slot.index] = previous
                self.reused += 1
                return
            slot.writer = self._new_writer(split, slot.index)
            for doc in slot.buffered:
                self._stream(slot, split, doc)
            slot.buffered = []
        slot.writer.meta["content"] = content
        self._submit(slot, split, last=True)

    def _submit(self, slot: _Slot, split: Split, last: bool) -> None:
        datas = [d.data for d in slot.chunk]
        if self.config.workers == 1:
            future = self._workers().submit(encode_documents, self.compressor, datas)
        else:
            future = self._workers().submit(_encode_in_worker, datas)
        self.pending.append((slot.writer, split, slot.index, slot.chunk, future, last))
        slot.chunk, slot.chunk_bytes = [], 0
        self._drain(self.max_in_flight)

    def _workers(self) -> Executor:
        if self.pool is None and self.config.workers == 1:
            # One encoding thread: reading, hashing and writing go on while it encodes (compressors
            # release the GIL in their native code: tiktoken, zlib, torch).
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="encode")
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=self.config.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.saved, str(self.out)),
            )
        return self.pool

    def _drain(self, keep: int) -> None:
        while len(self.pending) > keep:
            writer, split, index, chunk, future, last = self.pending[0]
            results = future.result()
            self.pending.popleft()
            writer.add_many([doc.key for doc in chunk], [doc.data for doc in chunk], results)
            if last:
                self.metas[split][index] = writer.finish()
                self.open_writers.remove(writer)
                self.written += 1

    def _shutdown(self, aborted: bool) -> None:
        if aborted:
            for writer in self.open_writers:
                writer.abort()
            self.open_writers.clear()
            self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=aborted)


def invalidate_manifest(out: Path) -> None:
    """Remove the manifest so that nothing loads the directory while it changes."""
    try:
        (out / MANIFEST).unlink()
    except FileNotFoundError:
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_shards(out: Path, entries: dict[Split, list[dict[str, Any]]]) -> None:
    """Delete shard directories an earlier, larger run left behind (the manifest is already gone)."""
    for split, split_entries in entries.items():
        keep = {e["name"] for e in split_entries}
        split_dir = out / split.value
        if split_dir.is_dir():
            for path in split_dir.glob("shard-*"):
                if path.name not in keep:
                    invalidate_manifest(out)
                    shutil.rmtree(path, ignore_errors=True)


# ---- the manifest ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What a prepare counted besides its shards: source documents per split, skips, shard work."""

    documents: dict[Split, int]  # documents, as opposed to the pieces the shards store
    skipped: dict[str, int]  # reason -> count
    written: int
    reused: int


def build_manifest(
    config: PrepareConfig,
    state: dict[str, Any],
    fingerprint: str,
    alphabet_size: int,
    entries: dict[Split, list[dict[str, Any]]],
    tally: Tally,
    corpus: dict[str, Any],
    **run: Any,
) -> dict[str, Any]:
    from proxylm import __version__

    splits = {split.value: _split_summary(split_entries, tally.documents[split]) for split, split_entries in entries.items()}
    raw_bytes = sum(s["raw_bytes"] for s in splits.values())
    symbols = sum(s["symbols"] for s in splits.values())
    side_dtypes = {e["side_dtype"] for split_entries in entries.values() for e in split_entries}
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "complete": True,
        "fingerprint": fingerprint,
        "compressor": {
            "spec": config.compressor,
            "config": state["config"],
            "alphabet_size": alphabet_size,
            "symbol_dtype": id_dtype(alphabet_size).name,
            "side_dtype": next((d for d in side_dtypes if d), None),
            "fit": state.get("fit"),
        },
        "documents": sum(s["documents"] for s in splits.values()),
        "pieces": sum(s["pieces"] for s in splits.values()),
        "max_piece_bytes": config.max_piece_bytes,
        "raw_bytes": raw_bytes,
        "symbols": symbols,
        "ratio": round(raw_bytes / symbols, 4) if symbols else None,
        "skipped": tally.skipped,
        "val_fraction": config.val_fraction,
        "split": "val if blake2b-64(document id, person='split') / 2**64 < val_fraction, else train",
        "splits": splits,
        "corpus": corpus,
        "options": {"shard_docs": config.shard_docs, "shard_bytes": config.shard_bytes, "fit_bytes": config.fit_bytes},
        "run": {
            "workers": config.workers,
            **run,
            "shards_written": tally.written,
            "shards_reused": tally.reused,
            "proxylm": __version__,
            "python": sys.version.split()[0],
        },
    }


def _split_summary(entries: list[dict[str, Any]], documents: int) -> dict[str, Any]:
    """Figures of one split; a shard's "documents" are the pieces it stores."""
    raw_bytes = sum(e["raw_bytes"] for e in entries)
    symbols = sum(e["symbols"] for e in entries)
    return {
        "documents": documents,
        "pieces": sum(e["documents"] for e in entries),
        "raw_bytes": raw_bytes,
        "symbols": symbols,
        "ratio": round(raw_bytes / symbols, 4) if symbols else None,
        "shards": [
            {k: e[k] for k in ("name", "documents", "raw_bytes", "symbols", "content")} for e in entries
        ],
    }


# ---- small helpers -----------------------------------------------------------------------------


def _digest(data: Any) -> str:
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode("utf-8"), digest_size=12).hexdigest()


def _skips(corpus: Corpus) -> str:
    counts = {k: v for k, v in corpus.skipped_counts().items() if v}
    return "skipped: " + (", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "none")


def printer(enabled: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if enabled:
            print(message, file=sys.stderr, flush=True)

    return say


def _progress_bar(corpus: Corpus, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=corpus.size_hint() or None, unit="B", unit_scale=True, desc="prepare", disable=None if enabled else True, file=sys.stderr)
