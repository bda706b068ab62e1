"""`neural`: arithmetic coding under a small byte LM, cut into equal-information windows.

After Lester et al. 2024, "Training LLMs over Neurally Compressed Text", as used by proxy
compression (DESIGN.md section 3). Spec: `neural:model=PATH,window_bits=16,reset=true`, where PATH
is a byte model directory (model.json + model.safetensors), a checkpoint directory or a training
run directory (its latest checkpoint is used, and the config records which).

Design choices:
- A window is the longest run of bytes whose arithmetic-coding interval still holds a point of
  the 2^-window_bits grid, i.e. the bytes fit in window_bits output bits. The coder
  (proxylm.compress.arith) restarts at every window, and so does the model's context
  (`reset=true`, the default; `reset=false` lets each window's rows start with the
  `context_bytes` bytes before it). The window's symbol is the smallest grid point in its
  interval, a fixed rule that also pads the trailing bits of a window closed early.
- Windows close early at `max_window_bytes` (a long run under a confident model) and at chunk
  ends: a document is cut every `chunk_bytes` bytes and windows never cross a cut, so a long
  document's chunks are coded in parallel (at most one short window per chunk).
- Fuzzy by design: a symbol is a point inside its window's interval, so chunks that differ only
  in a cheap tail can share it. The side information, one uint8 per symbol, is the window's byte
  count at its first symbol (0 at the continuation symbols described next). Shards keep it; the
  model never sees it. With it `decode` is exact and checks that every window is the one the
  encoder makes (its symbol and its length), raising CompressorError naming the window if not.
  Without it `decode` returns the shortest reading (each window cut at the first byte where its
  interval's smallest grid point is the symbol, a prefix of the true window) and warns with
  ShortestReadingWarning.
- window_bits < 16: a first byte rarer than 2^-window_bits cannot fit in one symbol; its window
  spans the fewest symbols k that hold it (a point of the 2^-(k * window_bits) grid), and its
  side entries read (n, 0, ..., 0). Windows of 16 bits always take one symbol.
- Determinism: the probability of window byte j depends only on the row content before it and
  on the row length, which is fixed per byte position: bytes 0..7 are scored in rows of 8
  positions, bytes 8..15 in rows of 16, later bytes in rows of max_window_bytes (plus the
  context, if any). Most windows are short (3-6 bytes), so most rows are short too. The encoder
  scores whole windows, the decoder their decoded prefixes; proxylm.compress.byte_model explains
  why that gives bit-identical integer tables for any batch composition.
- Throughput: every chunk of every document is in flight at once; a round scores up to
  ROUND_ROWS windows with one batched model pass per row length and advances all their coders
  together in numpy. `workers > 1` splits documents over spawned processes (one torch thread
  each); the output does not depend on the worker count.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import multiprocessing
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from proxylm import vocab
from proxylm.compress import arith
from proxylm.compress.base import Compressor, CompressorError, check_symbols
from proxylm.compress.byte_model import PRECISION, ByteModel, Precision, entries, load_byte_model, quantize
from proxylm.config import ConfigError, from_dict, to_dict
from proxylm.io import atomic_path

SHORT_TIERS = (8, 16)  # row lengths for window bytes 0..7 and 8..15; later bytes use max_window_bytes
ROUND_ROWS = 512  # windows advanced together per round
MODEL_DIR = "neural-model"  # where `save` copies the model, inside the shard directory
WEIGHTS_FILE, MODEL_CONFIG_FILE = "model.safetensors", "model.json"
_PARALLEL_MIN_BYTES = 1 << 16  # smaller batches are not worth a trip to the worker processes


class ShortestReadingWarning(UserWarning):
    """decode() had no window byte counts, so it returned the shortest reading of each window."""


@dataclass
class NeuralConfig:
    window_bits: int = 16
    """Output bits per window; the alphabet is 2^window_bits. 8 to 16."""
    reset: bool = True
    """Restart the model context at each window (the coder always restarts)."""
    max_window_bytes: int = 64
    """A window closes at this many bytes even if more would fit (at most 255: side info is uint8)."""
    chunk_bytes: int = 1024
    """Documents are cut every this many bytes; windows never cross a cut (parallel coding)."""
    context_bytes: int = 64
    """With reset=false: bytes before the window that its rows start with."""
    precision: Precision = Precision.FLOAT32
    """Float type of the model pass (see proxylm.compress.byte_model)."""

    def __post_init__(self) -> None:
        if not 8 <= self.window_bits <= 16:
            raise ConfigError(f"neural: window_bits must be in 8..16, got {self.window_bits}")
        if not 1 <= self.max_window_bytes <= 255:
            raise ConfigError(f"neural: max_window_bytes must be in 1..255, got {self.max_window_bytes}")
        if self.chunk_bytes < 1:
            raise ConfigError(f"neural: chunk_bytes must be >= 1, got {self.chunk_bytes}")
        if self.context_bytes < 0:
            raise ConfigError(f"neural: context_bytes must be >= 0, got {self.context_bytes}")

    @property
    def tiers(self) -> tuple[int, ...]:
        """Row lengths (without context): window byte j is scored in the first tier longer than j."""
        return tuple(t for t in SHORT_TIERS if t < self.max_window_bytes) + (self.max_window_bytes,)

    @property
    def row_context(self) -> int:
        return 0 if self.reset else self.context_bytes

    @property
    def longest_row(self) -> int:
        """Bytes of the longest row the model scores after `<bos>`: a whole window and its context."""
        return self.row_context + self.max_window_bytes


@dataclass
class _Windows:
    """Windows in flight, one entry per window, as parallel int64 arrays."""

    start: np.ndarray  # first byte of the window in the buffer
    end: np.ndarray  # end of its chunk in the buffer: the window cannot go past it
    context: np.ndarray  # bytes of left context its rows start with
    low: np.ndarray  # coder interval [low, low + range)
    range: np.ndarray
    k: np.ndarray  # symbols the window spans
    n: np.ndarray  # bytes taken (encoding) or to decode (decoding)
    point: np.ndarray  # the window's code point (decoding)

    @classmethod
    def fresh(cls, start: np.ndarray, end: np.ndarray, context: np.ndarray) -> "_Windows":
        low, range_ = arith.initial_state(len(start))
        zeros = np.zeros(len(start), dtype=np.int64)
        return cls(start.astype(np.int64), end.astype(np.int64), context.astype(np.int64), low, range_, zeros + 1, zeros, zeros.copy())

    def take(self, index) -> "_Windows":
        return _Windows(**{name: getattr(self, name)[index] for name in _WINDOW_FIELDS})

    @classmethod
    def concat(cls, parts: Sequence["_Windows"]) -> "_Windows":
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in _WINDOW_FIELDS})

    def __len__(self) -> int:
        return len(self.start)


_WINDOW_FIELDS = tuple(f.name for f in dataclasses.fields(_Windows))


def resolve_model_dir(path: Path) -> Path:
    """The model directory `path` names: itself if it holds a model.json, else the latest
    checkpoint of a checkpoint directory or of a run directory (its checkpoints/)."""
    if (path / MODEL_CONFIG_FILE).is_file() or not path.is_dir():
        return path  # a missing path fails later with the loader's precise message
    from proxylm.train.checkpoint import latest_checkpoint

    for checkpoints in (path, path / "checkpoints"):
        latest = latest_checkpoint(checkpoints) if checkpoints.is_dir() else None
        if latest is not None:
            return latest
    return path


def _model_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    with open(directory / WEIGHTS_FILE, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class NeuralCompressor(Compressor):
    name = "neural"

    def __init__(
        self,
        *,
        model: str | Path | ByteModel,
        window_bits: int = 16,
        reset: bool = True,
        max_window_bytes: int = 64,
        chunk_bytes: int = 1024,
        context_bytes: int = 64,
        precision: str | Precision = Precision.FLOAT32,
        model_sha256: str | None = None,
        workers: int = 1,
    ) -> None:
        try:
            self.cfg = from_dict(
                NeuralConfig,
                dict(window_bits=window_bits, reset=reset, max_window_bytes=max_window_bytes, chunk_bytes=chunk_bytes,
                     context_bytes=context_bytes, precision=precision),
                prefix="neural.",
            )
        except ConfigError as exc:
            raise CompressorError(str(exc)) from None
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise CompressorError(f"neural: workers must be an integer >= 1, got {workers!r}")
        self.workers = workers  # processes for encode_many; does not change the output
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        if isinstance(model, (str, Path)):
            self.model_path: Path | None = resolve_model_dir(Path(model))
            self.model_sha256 = self._check_model_dir(self.model_path, model_sha256)
            self.model: ByteModel = load_byte_model(self.model_path, self.cfg.precision)
        else:
            self.model_path, self.model_sha256, self.model = None, None, model

    @staticmethod
    def _check_model_dir(path: Path, expected_sha256: str | None) -> str:
        if not (path / WEIGHTS_FILE).is_file():
            load_byte_model(path)  # raises the precise reason: missing directory, no model.json, ...
        digest = _model_digest(path)
        if expected_sha256 is not None and digest != expected_sha256:
            raise CompressorError(
                f"neural: model={path}: its weights (sha256 {digest[:12]}...) are not the ones this compressor "
                f"was saved with (sha256 {expected_sha256[:12]}...)"
            )
        return digest

    # -- interface --------------------------------------------------------------------------------

    @property
    def alphabet_size(self) -> int:
        return 1 << self.cfg.window_bits

    def config(self) -> dict[str, Any]:
        model = None if self.model_path is None else str(self.model_path)
        return {"name": self.name, "model": model, "model_sha256": self.model_sha256, **to_dict(self.cfg)}

    def save(self, directory: Path) -> dict[str, Any]:
        """Copy the model into `directory/neural-model` and return a config that points there
        (relative to `directory`), so the shard directory is self-contained."""
        if self.model_path is None:
            raise CompressorError("neural: a compressor built on an in-memory byte model cannot be saved; build it from model=PATH")
        target = Path(directory) / MODEL_DIR
        if target.resolve() != self.model_path.resolve():
            for name in (WEIGHTS_FILE, MODEL_CONFIG_FILE):  # weights first: a model.json means complete weights
                with atomic_path(target / name) as tmp:
                    shutil.copyfile(self.model_path / name, tmp)
        return {**self.config(), "model": MODEL_DIR}

    @classmethod
    def load(cls, config: dict[str, Any], directory: Path) -> "NeuralCompressor":
        params = {k: v for k, v in config.items() if k != "name"}
        if not params.get("model"):
            raise CompressorError("neural: the saved config names no model")
        model = Path(params["model"])
        params["model"] = model if model.is_absolute() else Path(directory) / model
        try:
            return cls(**params)
        except TypeError as exc:
            raise CompressorError(f"neural: saved config in {directory}: {exc}") from None

    def encode(self, data: bytes) -> np.ndarray:
        return self.encode_with_side(data)[0]

    def encode_with_side(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_many_with_side([data])[0]

    def encode_many(self, docs: Sequence[bytes]) -> list[np.ndarray]:
        return [symbols for symbols, _ in self.encode_many_with_side(docs)]

    def encode_many_with_side(self, docs: Sequence[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(symbols, side) per document, batching all documents' windows through the model."""
        docs = [bytes(d) for d in docs]
        if self.workers > 1 and sum(map(len, docs)) >= _PARALLEL_MIN_BYTES:
            return self._encode_in_workers(docs)
        return self._encode_docs(docs)

    def decode(self, symbols: np.ndarray | list[int], side: np.ndarray | None = None) -> bytes:
        """Exact with side information; otherwise the shortest reading, with a ShortestReadingWarning."""
        symbols = check_symbols(symbols, self.alphabet_size, self.name)
        if side is None:
            warnings.warn(
                "neural: no window byte counts given, so each window decodes to its shortest reading "
                "(a prefix of the encoded bytes); pass side= for an exact decode",
                ShortestReadingWarning,
                stacklevel=2,
            )
            return self._decode_shortest(symbols)
        return self._decode_exact(symbols, np.asarray(side))

    # -- multiprocessing --------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None, "workers": 1}

    def _encode_in_workers(self, docs: list[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # fork after torch's thread pools start is unsafe
            self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker, initargs=(self,))
        groups = _split_by_bytes(docs, self.workers)  # one large group each: many chunks in flight per round
        results = self._pool.map(_encode_in_worker, groups)
        return [pair for group in results for pair in group]

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- encoding ---------------------------------------------------------------------------------

    def _encode_docs(self, docs: list[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
        buffer = np.frombuffer(b"".join(docs), dtype=np.uint8)
        doc_starts = np.cumsum([0] + [len(d) for d in docs])  # (D + 1,)
        chunk_starts, chunk_ends = self._chunks(doc_starts)
        queues = [self._fresh(chunk_starts, chunk_ends, doc_starts)] + [None] * (len(self.cfg.tiers) - 1)
        closed: list[_Windows] = []
        while any(q is not None and len(q) for q in queues):
            tier = self._next_tier(queues)
            batch, rest = queues[tier].take(slice(0, ROUND_ROWS)), queues[tier].take(slice(ROUND_ROWS, None))
            queues[tier] = rest
            done, still_open = self._encode_round(buffer, batch, tier)
            closed.append(done)
            follow = done.take(done.start + done.n < done.end)
            if len(follow):
                queues[0] = _Windows.concat([queues[0], self._fresh(follow.start + follow.n, follow.end, doc_starts)])
            if len(still_open):
                queues[tier + 1] = still_open if queues[tier + 1] is None else _Windows.concat([queues[tier + 1], still_open])
        windows = _Windows.concat(closed) if closed else _Windows.fresh(*(np.zeros(0, np.int64),) * 3)
        return self._assemble(windows.take(np.argsort(windows.start, kind="stable")), doc_starts)

    def _chunks(self, doc_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts = [np.arange(a, b, self.cfg.chunk_bytes) for a, b in zip(doc_starts[:-1], doc_starts[1:])]
        chunk_starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        doc_of_chunk = np.searchsorted(doc_starts, chunk_starts, side="right") - 1
        return chunk_starts, np.minimum(chunk_starts + self.cfg.chunk_bytes, doc_starts[doc_of_chunk + 1])

    def _fresh(self, starts: np.ndarray, ends: np.ndarray, doc_starts: np.ndarray) -> _Windows:
        doc_start = doc_starts[np.searchsorted(doc_starts, starts, side="right") - 1]
        return _Windows.fresh(starts, ends, np.minimum(starts - doc_start, self.cfg.row_context))

    @staticmethod
    def _next_tier(queues: list[_Windows | None]) -> int:
        """The tier with the most windows waiting (a chunk waits in one queue at a time, so serving
        the fullest queue keeps rounds large)."""
        sizes = [0 if q is None else len(q) for q in queues]
        return int(np.argmax(sizes))

    def _rows(self, buffer: np.ndarray, w: _Windows, tier: int) -> np.ndarray:
        """(N, context + tier length) uint8 rows: each window's context, then its bytes (then whatever
        follows in the buffer, which causality keeps out of every position that is read)."""
        width = self.cfg.row_context + self.cfg.tiers[tier]
        index = (w.start - w.context)[:, None] + np.arange(width)  # (N, width)
        return buffer[np.minimum(index, len(buffer) - 1)] if len(buffer) else np.zeros(index.shape, np.uint8)

    def _tier_positions(self, tier: int) -> range:
        return range(self.cfg.tiers[tier - 1] if tier else 0, self.cfg.tiers[tier])

    def _encode_round(self, buffer: np.ndarray, w: _Windows, tier: int) -> tuple[_Windows, _Windows]:
        """Advance windows through the byte positions of one tier; return (closed, still open)."""
        logits = self.model.byte_logits(self._rows(buffer, w, tier))  # (N, width, 256)
        bits = self.cfg.window_bits
        is_open = np.ones(len(w), dtype=bool)
        for j in self._tier_positions(tier):
            index = np.flatnonzero(is_open)
            ended = w.start[index] + j >= w.end[index]
            is_open[index[ended]] = False
            index = index[~ended]
            if not index.size:
                break
            byte = buffer[w.start[index] + j].astype(np.int64)  # (A,)
            cum, freq = entries(logits[index, w.context[index] + j], byte)
            if j == 0:
                w.k[index] = self._symbols_needed(cum, freq)
            low, range_ = arith.narrow(w.low[index], w.range[index], cum, freq, PRECISION)
            fits = arith.grid_point(low, range_, w.k[index] * bits)[1]
            taken = index[fits]
            w.low[taken], w.range[taken], w.n[taken] = low[fits], range_[fits], j + 1
            is_open[index[~fits]] = False
            if j + 1 == self.cfg.max_window_bytes:
                is_open[taken] = False
        is_open &= w.start + w.n < w.end  # windows that filled their chunk need no longer rows
        return w.take(~is_open), w.take(is_open)

    def _symbols_needed(self, cum: np.ndarray, freq: np.ndarray) -> np.ndarray:
        """Fewest symbols whose grid has a point in each first byte's interval (1 for 16-bit windows)."""
        low, range_ = arith.narrow(*arith.initial_state(len(cum)), cum, freq, PRECISION)
        k = np.ones(len(cum), dtype=np.int64)
        while not (fits := arith.grid_point(low, range_, k * self.cfg.window_bits)[1]).all():
            k[~fits] += 1
        return k

    def _assemble(self, w: _Windows, doc_starts: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Closed windows in buffer order -> (symbols, side) per document."""
        bits = self.cfg.window_bits
        points = arith.grid_point(w.low, w.range, w.k * bits)[0]
        window_of_symbol = np.repeat(np.arange(len(w)), w.k)  # (S,)
        first_symbol = np.cumsum(w.k) - w.k  # (W,)
        digit = np.arange(len(window_of_symbol)) - first_symbol[window_of_symbol]  # 0 = most significant
        shift = bits * (w.k[window_of_symbol] - 1 - digit)
        symbols = ((points[window_of_symbol] >> shift) & ((1 << bits) - 1)).astype(vocab.id_dtype(self.alphabet_size))
        side = np.zeros(len(symbols), dtype=np.uint8)
        side[first_symbol] = w.n
        doc_of_window = np.searchsorted(doc_starts, w.start, side="right") - 1
        cuts = np.cumsum(np.bincount(doc_of_window, weights=w.k, minlength=len(doc_starts) - 1).astype(np.int64))[:-1]
        return list(zip(np.split(symbols, cuts), np.split(side, cuts)))

    # -- decoding ---------------------------------------------------------------------------------

    def _decode_exact(self, symbols: np.ndarray, side: np.ndarray) -> bytes:
        w = self._windows_from_side(symbols, side)
        out = np.zeros(int(w.n.sum()), dtype=np.uint8)
        groups = [np.arange(len(w))] if self.cfg.reset else [np.array([i]) for i in range(len(w))]
        refusals: list[_Refusal] = []
        for group in groups:  # with reset=false a window's context is the window before it
            refusals += self._decode_pass(out, w.take(group), group, exact=True)[1]
        for refusal in refusals:  # once every byte is known
            refusal.check(out)
        return out.tobytes()

    def _windows_from_side(self, symbols: np.ndarray, side: np.ndarray) -> _Windows:
        if side.shape != symbols.shape or (side.size and not np.issubdtype(side.dtype, np.integer)):
            raise CompressorError(f"neural: side information must be one integer per symbol: {side.shape} for {symbols.shape} symbols")
        side = side.astype(np.int64)
        if side.size and side[0] == 0:
            raise CompressorError("neural: window 0 has byte count 0 (a count of 0 only marks a continuation symbol)")
        if (side < 0).any() or (side > self.cfg.max_window_bytes).any():
            bad = int(np.flatnonzero((side < 0) | (side > self.cfg.max_window_bytes))[0])
            raise CompressorError(f"neural: symbol {bad} has byte count {side[bad]}, outside 0..max_window_bytes={self.cfg.max_window_bytes}")
        first = np.flatnonzero(side > 0)
        k = np.diff(np.append(first, len(side)))
        bits = self.cfg.window_bits
        most = -(-PRECISION // bits)  # a first byte costs at most PRECISION bits
        if (k > most).any():
            bad = int(np.flatnonzero(k > most)[0])
            raise CompressorError(f"neural: window {bad} spans {k[bad]} symbols; a window never needs more than {most}")
        points = np.zeros(len(first), dtype=np.int64)
        for digit in range(int(k.max(initial=0))):  # most significant symbol first
            inside = k > digit
            points[inside] = (points[inside] << bits) | symbols[first[inside] + digit]
        n = side[first]
        starts = np.cumsum(n) - n
        chunk = self.cfg.chunk_bytes
        crossing = starts // chunk != (starts + n - 1) // chunk
        if crossing.any():
            bad = int(np.flatnonzero(crossing)[0])
            raise CompressorError(f"neural: window {bad} (bytes {starts[bad]}..{starts[bad] + n[bad]}) crosses a chunk boundary (chunk_bytes={chunk})")
        ends = np.minimum((starts // chunk + 1) * chunk, int(n.sum()))
        w = _Windows.fresh(starts, ends, np.minimum(starts, self.cfg.row_context))
        w.k, w.n, w.point = k.astype(np.int64), n, points
        return w

    def _decode_pass(self, out: np.ndarray, w: _Windows, ids: np.ndarray, exact: bool) -> tuple[np.ndarray, list[_Refusal]]:
        """Decode windows whose contexts are in `out`, writing their bytes there. exact: decode w.n
        bytes and check each window's symbol; else stop at the shortest reading. Returns the byte
        counts and, for exact decoding, the checks that each window refused the byte after it
        (run them once that byte is decoded). `ids` name the windows in errors."""
        cap = self.cfg.max_window_bytes
        done = np.zeros(len(w), dtype=bool) if not exact else w.n == 0
        n = w.n.copy() if exact else np.zeros(len(w), dtype=np.int64)
        closing = exact & (w.n < cap) & (w.start + w.n < w.end)  # windows followed by a byte they refused
        follow_tables: dict[int, np.ndarray] = {}
        for tier in range(len(self.cfg.tiers)):
            for j in self._tier_positions(tier):
                decoding = ~done & ((j < n) if exact else True)
                checking = closing & (j == n) if exact else np.zeros(len(w), dtype=bool)
                active = np.flatnonzero(decoding | checking)
                if not active.size:
                    continue
                logits = self.model.byte_logits(self._rows(out, w.take(active), tier))
                tables = quantize(logits[np.arange(active.size), w.context[active] + j])  # (A, 256)
                for row in np.flatnonzero(checking[active]):
                    follow_tables[int(active[row])] = tables[row]
                index = active[decoding[active]]
                if index.size:
                    self._decode_step(out, w, index, tables[decoding[active]], j, ids, exact, done, n)
        if not exact:
            return n, []
        self._check_points(w, ids)
        bits = self.cfg.window_bits
        return n, [
            _Refusal(int(ids[i]), int(w.n[i]), int(w.start[i] + w.n[i]), follow_tables[int(i)], int(w.low[i]), int(w.range[i]), int(w.k[i]) * bits)
            for i in np.flatnonzero(closing)
        ]

    def _decode_step(self, out, w: _Windows, index, tables, j: int, ids, exact: bool, done, n) -> None:
        bits = self.cfg.window_bits
        target = arith.locate(w.low[index], w.range[index], w.point[index], w.k[index] * bits, PRECISION)
        lost = target < 0
        if lost.any():
            if exact or j == 0:
                bad = int(ids[index[lost][0]])
                raise CompressorError(f"neural: window {bad} does not decode at its byte {j} under this model (wrong model, or corrupted symbols or counts)")
            done[index[lost]] = True  # shortest reading: no byte fits any more
            index, tables, target = index[~lost], tables[~lost], target[~lost]
        cum_tables = arith.cumulative(tables)  # (A, 257)
        byte = (cum_tables[:, 1:] <= target[:, None]).sum(axis=1)  # (A,) cum[b] <= target < cum[b + 1]
        cum, freq = cum_tables[np.arange(index.size), byte], tables[np.arange(index.size), byte]
        if j == 0:
            self._check_symbol_count(w, index, cum, freq, ids)
        w.low[index], w.range[index] = arith.narrow(w.low[index], w.range[index], cum, freq, PRECISION)
        out[w.start[index] + j] = byte
        if not exact:
            n[index] = j + 1
            at_point = arith.grid_point(w.low[index], w.range[index], w.k[index] * bits)[0] == w.point[index]
            done[index[at_point | (j + 1 == self.cfg.max_window_bytes)]] = True

    def _check_symbol_count(self, w: _Windows, index, cum, freq, ids) -> None:
        needed = self._symbols_needed(cum, freq)
        wrong = needed != w.k[index]
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise CompressorError(
                f"neural: window {int(ids[index[i]])} spans {w.k[index[i]]} symbols but its first byte needs {needed[i]} "
                "(wrong model, or corrupted counts)"
            )

    def _check_points(self, w: _Windows, ids) -> None:
        wrong_point = arith.grid_point(w.low, w.range, w.k * self.cfg.window_bits)[0] != w.point
        if wrong_point.any():
            i = int(np.flatnonzero(wrong_point)[0])
            raise CompressorError(
                f"neural: window {int(ids[i])} is not what its {w.n[i]} bytes encode to under this model "
                "(wrong model, or corrupted symbols or counts)"
            )

    def _decode_shortest(self, symbols: np.ndarray) -> bytes:
        cap = self.cfg.max_window_bytes
        count = len(symbols)
        scratch = np.zeros(count * cap, dtype=np.uint8)
        starts = np.arange(count, dtype=np.int64) * cap
        w = _Windows.fresh(starts, starts + cap, np.zeros(count, dtype=np.int64))
        w.point = symbols.astype(np.int64)
        if self.cfg.reset:
            n = self._decode_pass(scratch, w, np.arange(count), exact=False)[0]
            return b"".join(scratch[s : s + m].tobytes() for s, m in zip(starts, n))
        out = bytearray()
        for i in range(count):  # each window's context is the reading before it
            scratch = np.zeros(len(out) + cap, dtype=np.uint8)
            scratch[: len(out)] = np.frombuffer(bytes(out), dtype=np.uint8)
            one = _Windows.fresh(np.array([len(out)]), np.array([len(out) + cap]), np.array([min(len(out), self.cfg.row_context)]))
            one.point = w.point[i : i + 1]
            m = int(self._decode_pass(scratch, one, np.array([i]), exact=False)[0][0])
            out += scratch[len(out) : len(out) + m].tobytes()
        return bytes(out)


@dataclass
class _Refusal:
    """A decoded window must refuse the byte after it (else the encoder would have taken it)."""

    window: int
    n: int  # the window's byte count
    position: int  # where the refused byte is in the output
    table: np.ndarray  # (256,) the model's table for it
    low: int  # the window's final interval
    range: int
    bits: int  # its code bits (symbols x window_bits)

    def check(self, out: np.ndarray) -> None:
        byte = int(out[self.position])
        low, range_ = arith.narrow(self.low, self.range, int(self.table[:byte].sum()), int(self.table[byte]), PRECISION)
        if arith.grid_point(low, range_, self.bits)[1]:
            raise CompressorError(
                f"neural: window {self.window} has {self.n} bytes but the encoder would have taken the next one too "
                "(wrong model, or corrupted counts)"
            )


def _split_by_bytes(docs: list[bytes], parts: int) -> list[list[bytes]]:
    """Contiguous groups of documents with about equal byte counts, in order."""
    sizes = np.cumsum([len(d) + 1 for d in docs])
    cuts = np.searchsorted(sizes, sizes[-1] * np.arange(1, parts) / parts)
    bounds = [0, *sorted(set(int(c) for c in cuts)), len(docs)]
    return [docs[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


_WORKER: NeuralCompressor | None = None


def _init_worker(compressor: NeuralCompressor) -> None:
    global _WORKER
    _WORKER = compressor


def _encode_in_worker(docs: list[bytes]) -> list[tuple[np.ndarray, np.ndarray]]:
    assert _WORKER is not None
    return _WORKER._encode_docs(docs)
