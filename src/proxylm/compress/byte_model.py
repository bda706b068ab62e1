"""Byte models for the neural proxy: next-byte frequency tables that are exact and reproducible.

A byte model scores rows of bytes: `byte_logits(rows)` maps (N, L) uint8 rows to (N, L, 256)
float scores (nats), where row n, position j scores byte j given `<bos>` + rows[n, :j]. `quantize`
turns scores into integer frequency tables for the arithmetic coder. Both sides of the coder
(the encoder, which knows the whole window, and the decoder, which knows only its prefix) must
see bit-identical tables. How that is guaranteed:

- Causality, not incremental decoding. Position j of a row depends only on the row's first j
  bytes, so the encoder runs the whole window in one row and the decoder runs its prefix padded
  with zeros, and both read position j. A causal transformer gives bit-identical results at
  position j whatever follows it, provided the input *shape* is the same: masked keys contribute
  exact zeros, and every kernel's blocking depends on shapes only. Sequence length does change the
  attention kernel's blocking (float32 results then differ by ~1e-5), so callers fix each row length
  (the neural compressor's tiers). The row count does not change a row's result (each output row
  is its own dot products; tested across batch sizes and row positions), and this module still
  keeps to a few shapes: calls have a power-of-two number of rows up to ROWS_PER_CALL (padded)
  and run on one torch thread (parallelism comes from processes, and thread count can change how
  a kernel splits its work). The KV-cache path (`forward_step`) is never used for coding: its
  shapes differ from the full pass's.
- Exact quantisation. Scores become integers on a grid of 1/32 bit (one IEEE multiply and a
  round), weights come from a table of 2^(-d/32) (integer 32nd roots, computed exactly at import)
  and are shared out to a total of 2^PRECISION, every byte >= 1, the remainder to the most likely
  byte. Every step is a correctly rounded IEEE operation on integers held exactly, so no result
  depends on vector width, summation order or libm: identical scores give identical tables on
  any machine.
- Across machines (other CPUs, other kernel builds) scores can differ in their last bits, and a
  score near a grid boundary then rounds the other way. In float32 (the default; differences
  ~1e-5) that can touch a large share of tables, so float32 symbols are reproducible on the
  machine and library build that made them; `precision=float64` (2-3x slower; differences
  ~1e-14) makes a changed table a ~1e-10 event.

Contexts start with `<bos>` only, which is how the trainer lays out documents in bytes mode
(`<bos> bytes <eos>`), so a compressor model is an ordinary byte model checkpoint.

`CountByteModel` is an order-k count model with the same interface: deterministic, fast, no
torch; the tests use it as a reference model.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from proxylm import vocab
from proxylm.compress.base import CompressorError

PRECISION = 16  # tables sum to 2^16: a byte costs at most 16 bits
ROWS_PER_CALL = 64  # the most rows per model call
STEPS_PER_BIT = 32  # score grid: 1/32 bit (a probability error of at most 1.1%)
_MAX_STEPS = STEPS_PER_BIT * 24  # 2^-24 is below every table's resolution; larger gaps are clamped


class Precision(enum.Enum):
    FLOAT32 = "float32"  # fast; tables reproducible on the machine (and kernels) that made them
    FLOAT64 = "float64"  # 2-3x slower; tables agree across CPUs too, but for ~1e-10 of them


class ByteModel(Protocol):
    def byte_logits(self, rows: np.ndarray) -> np.ndarray:
        """(N, L) uint8 rows -> (N, L, 256) float scores (natural-log units) of byte j given <bos> + rows[n, :j].
        Position j must depend on rows[n, :j] and L only: not on later bytes, nor on other rows."""
        ...


def _integer_root(value: int, n: int) -> int:
    """floor(value ** (1 / n)) in exact integer arithmetic."""
    lo, hi = 0, 1 << (value.bit_length() // n + 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if mid**n <= value else (lo, mid - 1)
    return lo


def _weight_table() -> np.ndarray:
    """weights[d] = floor(2^24 * 2^(-d / 32)) for d in [0, _MAX_STEPS], exactly (float32 holds
    every integer below 2^24 exactly)."""
    bits = 24
    fractions = [_integer_root(2 ** (bits * STEPS_PER_BIT - i), STEPS_PER_BIT) for i in range(STEPS_PER_BIT)]
    return np.array([fractions[d % STEPS_PER_BIT] >> (d // STEPS_PER_BIT) for d in range(_MAX_STEPS + 1)], dtype=np.float32)


_WEIGHTS = _weight_table()
_STEPS_PER_NAT = STEPS_PER_BIT / math.log(2)
_TOTAL = 1 << PRECISION
_SPARE = np.float32(_TOTAL - 256)  # mass shared out in proportion to the weights; each byte also gets 1


def _floors(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The common core of `quantize` and `entries`: (shares (M, 256), best (M,), leftover (M,)),
    where a byte's frequency is share + 1, plus the leftover for the best byte.

    Every value is an integer held exactly in float32, and every operation is a correctly
    rounded IEEE multiply, divide or floor, or an exact sum of integers: no result depends on
    vector width, summation order or libm. The shares sum to at most 2^16 - 256 (the rounding of
    the scale adds at most 2^-23 relatively, less than one unit)."""
    logits = np.asarray(logits)
    if logits.dtype != np.float64:
        logits = logits.astype(np.float32, copy=False)
    steps = logits * logits.dtype.type(_STEPS_PER_NAT)
    np.rint(steps, out=steps)
    best = steps.argmax(axis=-1)  # (M,)
    rows = np.arange(len(steps))
    gap = (steps[rows, best][:, None] - steps).astype(np.int32)  # (M, 256) grid steps below the best
    weights = np.take(_WEIGHTS, gap, mode="clip")  # (M, 256) float32 integers <= 2^24
    scale = (_SPARE / weights.sum(axis=-1, dtype=np.float64)).astype(np.float32)  # (M,)
    shares = weights * scale[:, None]
    np.floor(shares, out=shares)
    return shares, best, _TOTAL - 256 - shares.sum(axis=-1)


def quantize(logits: np.ndarray) -> np.ndarray:
    """Scores (M, 256) in nats, float32 or float64 -> frequency tables (M, 256) int64, each >= 1,
    summing to 2^PRECISION (the remainder goes to the most likely byte)."""
    shares, best, leftover = _floors(logits)
    freqs = shares.astype(np.int64) + 1
    freqs[np.arange(len(freqs)), best] += leftover.astype(np.int64)
    return freqs


def entries(logits: np.ndarray, byte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative frequency, frequency) of byte[m] in quantize(logits)[m], without building the
    integer tables: what the encoder needs, the same numbers the decoder's tables hold."""
    shares, best, leftover = _floors(logits)
    rows = np.arange(len(shares))
    before = (np.arange(256) < byte[:, None]).astype(np.float32)  # (M, 256) bytes below each row's byte
    below = np.einsum("mb,mb->m", shares, before)  # exact in any order: integer sums < 2^16
    cum = below + byte + np.where(best < byte, leftover, 0)
    freq = shares[rows, byte] + 1 + np.where(best == byte, leftover, 0)
    return cum.astype(np.int64), freq.astype(np.int64)


def call_rows(n: int) -> int:
    """Rows of the model call that scores n <= ROWS_PER_CALL rows: the next power of two, so calls
    come in a few fixed shapes (few windows in flight should not pay for 64 rows)."""
    return min(ROWS_PER_CALL, 1 << max(n - 1, 0).bit_length())


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with `n` intra-op threads, then restore the previous setting."""
    import torch

    previous = torch.get_num_threads()
    if previous != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if previous != n:
            torch.set_num_threads(previous)


class TransformerByteModel:
    """A proxylm Transformer (a byte model checkpoint) behind the ByteModel interface."""

    def __init__(self, model, precision: Precision = Precision.FLOAT32):
        import torch

        dtype = torch.float64 if precision is Precision.FLOAT64 else torch.float32
        self.model = model.to(dtype).eval()
        self.precision = precision
        self.max_positions = model.cfg.max_seq_len  # the longest context it was trained on

    def byte_logits(self, rows: np.ndarray) -> np.ndarray:
        import torch

        rows = np.asarray(rows, dtype=np.uint8)
        n, length = rows.shape
        out = np.empty((n, length, 256), dtype=np.float64 if self.precision is Precision.FLOAT64 else np.float32)
        pos = torch.arange(length).expand(ROWS_PER_CALL, length)  # (R, L) every row starts at <bos>
        with torch.inference_mode(), torch_threads(1):
            for start in range(0, n, ROWS_PER_CALL):
                chunk = rows[start : start + ROWS_PER_CALL]
                batch = call_rows(len(chunk))
                ids = np.full((batch, length), vocab.BYTE_OFFSET, dtype=np.int64)  # padding rows are never read
                ids[:, 0] = vocab.BOS
                ids[: len(chunk), 1:] = vocab.bytes_to_ids(chunk[:, :-1])  # (r, L) <bos> + bytes[:L-1]
                logits = self.model(torch.from_numpy(ids), pos=pos[:batch]).logits  # (batch, L, V)
                out[start : start + len(chunk)] = logits[: len(chunk), :, vocab.BYTE_OFFSET : vocab.SYMBOL_OFFSET].numpy()
        return out


def load_byte_model(path: str | Path, precision: Precision = Precision.FLOAT32) -> TransformerByteModel:
    """A byte model from a proxylm model directory (model.json + model.safetensors)."""
    from proxylm.model_io import load_model

    try:
        model = load_model(path)
    except CompressorError:
        raise
    except Exception as exc:  # CheckpointError and friends: say that the neural compressor wanted it
        raise CompressorError(f"neural: model={path}: {exc}") from None
    return TransformerByteModel(model, precision)


SHORTEST_CHUNK = 8  # every training chunk teaches a window's first 8 bytes
LONGEST_CHUNK = 64  # the default coder's longest row (proxylm.compress.neural.NeuralConfig.longest_row)


def training_chunks(
    doc: bytes, rng: np.random.Generator, shortest: int = SHORTEST_CHUNK, longest: int = LONGEST_CHUNK
) -> list[bytes]:
    """Cut a document into consecutive chunks of random length in [shortest, longest], each cut
    moved forward to a UTF-8 character boundary. Windows start anywhere in a document, right
    after `<bos>`; a compressor LM trained on `<bos> chunk <eos>` learns exactly that (trained on
    whole documents it would expect `<bos>` before a file's first byte only). `longest` should be
    the coder's longest row, and most windows are a few bytes, so chunks start short."""
    chunks, start = [], 0
    while start < len(doc):
        end = min(start + int(rng.integers(shortest, longest + 1)), len(doc))
        while end < len(doc) and 0x80 <= doc[end] < 0xC0:  # never split a multi-byte character
            end += 1
        chunks.append(doc[start:end])
        start = end
    return chunks


def write_training_chunks(
    docs: Iterable[tuple[str, bytes]], out: str | Path, rng: np.random.Generator,
    shortest: int = SHORTEST_CHUNK, longest: int = LONGEST_CHUNK,
) -> int:
    """Write a compressor LM's corpus: each (id, UTF-8 bytes) document's `training_chunks`, one
    JSONL record `{"id": "<id>#<k>", "text": ...}` per chunk, atomically. Trained in bytes mode,
    each record becomes one `<bos> chunk <eos>` unit. Returns the number of chunks."""
    import json

    from proxylm.io import atomic_path

    count = 0
    with atomic_path(out) as tmp, open(tmp, "w") as fh:
        for doc_id, data in docs:
            for k, chunk in enumerate(training_chunks(data, rng, shortest, longest)):
                fh.write(json.dumps({"id": f"{doc_id}#{k}", "text": chunk.decode("utf-8")}) + "\n")
                count += 1
    return count


class CountByteModel:
    """Order-k byte counts (contexts hashed into `buckets`), add-one smoothed: a reference model.

    Contexts are the previous k bytes of the row; near the row start the missing bytes read as
    256, the `<bos>` marker. Windows start anywhere in a document, so `fit` counts every position
    under its full context and under each shorter, `<bos>`-padded one. Scores are natural-log
    frequencies, so `quantize` applies as-is.
    """

    def __init__(self, log_probs: np.ndarray, order: int):
        self.log_probs = np.asarray(log_probs, dtype=np.float32)  # (buckets, 256)
        self.order = order

    @classmethod
    def fit(cls, docs: Iterable[bytes], order: int = 2, buckets: int = 4096) -> "CountByteModel":
        if not 0 <= order <= 6:
            raise ValueError(f"order must be in 0..6, got {order}")
        counts = np.ones((buckets, 256), dtype=np.float64)
        for doc in docs:
            row = np.frombuffer(doc, dtype=np.uint8)[None]  # (1, n)
            for seen in range(order + 1):  # contexts cut to the last `seen` bytes, as at a window start
                context = cls._contexts(row, order, buckets, seen)
                np.add.at(counts, (context.ravel(), row.ravel()), 1)
        return cls(np.log(counts / counts.sum(axis=1, keepdims=True)), order)

    @staticmethod
    def _contexts(rows: np.ndarray, order: int, buckets: int, seen: int | None = None) -> np.ndarray:
        """(N, L) rows -> (N, L) bucket of each position's context: the k bytes before it, of which
        only the last `seen` (default all) are kept and the rest read as <bos>."""
        n, length = rows.shape
        padded = np.concatenate([np.full((n, order), 256, dtype=np.int64), rows.astype(np.int64)], axis=1)
        context = np.zeros((n, length), dtype=np.int64)
        for back in range(order):
            previous = padded[:, order - 1 - back : order - 1 - back + length]  # byte back + 1 positions before
            context = context * 257 + (previous if seen is None or back < seen else 256)
        return context % buckets

    def byte_logits(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.uint8)
        return self.log_probs[self._contexts(rows, self.order, len(self.log_probs))]  # (N, L, 256)
