"""The translation probe: how well a model turns one view of a document into the other.

    report = probe_translation(model, docs, compressor, max_doc_bytes=256)
    report.forward.exact_match, report.forward.bpb, report.reverse.accuracy

Design choices:
- Layouts are those of training's `translation` mode (proxylm.data.mixer):
      forward (compressed -> raw)   <bos> <compressed> S </compressed> <raw> B </raw> <eos>
      reverse (raw -> compressed)   <bos> <raw> B </raw> <compressed> S </compressed> <eos>
  The first view and the second view's opening sentinel are the prompt.
- Two measures per direction. Teacher-forced: nats of the second view's body (bytes B, or
  symbols S) given everything before it, reported in bits per raw byte so both directions
  and plain BPB share a unit. Greedy: decode as many ids as the reference body has (bytes
  restricted to byte ids, symbols to symbol ids; either may end its view early) and compare
  position by position: exact match of the whole body, and accuracy = matching positions /
  reference length (a short output counts its missing positions as wrong). `written` = output
  ids / reference ids says how much of that is a view closed early rather than wrong ids.
- `raw_bpb` is the plain raw-view BPB of the same (cropped) documents: the gap between it and
  the forward BPB is what the compressed view tells the model about the bytes.
- Documents are cropped to `max_doc_bytes` (at a UTF-8 boundary) before compressing, so a
  probe stays short; a document whose two views together do not fit the context is skipped
  and counted as `too_long`, never cut mid-view.
- Greedy decoding is batched (`decode_rows`, `batch_size` documents at a time); each row equals
  the document decoded alone.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from proxylm import vocab
from proxylm.errors import UserError
from proxylm.evaluate.bpb import LN2, Framed, View, document_pairs, frame, score
from proxylm.evaluate.decoder import Row, decode_rows
from proxylm.evaluate.generate import drop_incomplete_tail, raw_output_ids

FRAME_IDS = 4  # ids fed besides the two bodies: <bos>, the first view's two sentinels, the second's opening one


class Direction(enum.Enum):
    FORWARD = "compressed_to_raw"
    REVERSE = "raw_to_compressed"


@dataclass
class DirectionScore:
    """Sums over documents for one direction; the properties are the reported figures."""

    documents: int = 0
    exact: int = 0  # documents whose whole body was reproduced
    matched: int = 0  # body positions reproduced
    positions: int = 0  # body positions in the references
    written: int = 0  # body positions the model wrote before closing the view (at most `positions`)
    nats: float = 0.0  # teacher-forced nats of the bodies
    raw_bytes: int = 0

    @property
    def exact_match(self) -> float:
        return self.exact / self.documents if self.documents else float("nan")

    @property
    def accuracy(self) -> float:
        return self.matched / self.positions if self.positions else float("nan")

    @property
    def written_share(self) -> float:
        return self.written / self.positions if self.positions else float("nan")

    @property
    def bpb(self) -> float:
        return self.nats / (LN2 * self.raw_bytes) if self.raw_bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"exact_match": self.exact_match, "accuracy": self.accuracy, "written": self.written_share, "bpb": self.bpb,
                "positions": self.positions}


@dataclass
class TranslationReport:
    forward: DirectionScore = field(default_factory=DirectionScore)
    reverse: DirectionScore = field(default_factory=DirectionScore)
    raw: DirectionScore = field(default_factory=DirectionScore)  # plain raw view, nats only
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def raw_bpb(self) -> float:
        return self.raw.bpb

    def to_dict(self) -> dict[str, Any]:
        return {
            "exact_match": self.forward.exact_match,
            "byte_accuracy": self.forward.accuracy,
            "bpb_given_compressed": self.forward.bpb,
            "raw_bpb": self.raw_bpb,
            "documents": self.forward.documents,
            "raw_bytes": self.forward.raw_bytes,
            "compressed_to_raw": self.forward.to_dict(),
            "raw_to_compressed": self.reverse.to_dict(),
            "skipped": dict(self.skipped),
        }


@dataclass(frozen=True)
class Pair:
    """One document's two views as ids."""

    doc_id: str
    raw: np.ndarray  # (n,) byte ids
    symbols: np.ndarray  # (m,) symbol ids

    def prompt(self, direction: Direction) -> np.ndarray:
        first, (open_id, close_id), second_open = self._parts(direction)
        return np.concatenate([[vocab.BOS, open_id], first, [close_id, second_open]]).astype(np.int64)

    def target(self, direction: Direction) -> np.ndarray:
        return self.raw if direction is Direction.FORWARD else self.symbols

    def _parts(self, direction: Direction):
        if direction is Direction.FORWARD:
            return self.symbols, (vocab.COMPRESSED_OPEN, vocab.COMPRESSED_CLOSE), vocab.RAW_OPEN
        return self.raw, (vocab.RAW_OPEN, vocab.RAW_CLOSE), vocab.COMPRESSED_OPEN


def crop(data: bytes, max_bytes: int) -> bytes:
    return drop_incomplete_tail(data[:max_bytes]) if len(data) > max_bytes else data


def pairs(docs: Iterable[Any], compressor: Any, max_doc_bytes: int, max_len: int, skipped: dict[str, int]) -> Iterator[Pair]:
    for doc_id, data in document_pairs(docs):
        data = crop(data, max_doc_bytes)
        if not data:
            skipped["empty"] = skipped.get("empty", 0) + 1
            continue
        pair = Pair(doc_id, vocab.bytes_to_ids(data), vocab.symbols_to_ids(compressor.encode(data)))
        if len(pair.raw) + len(pair.symbols) + FRAME_IDS > max_len:
            skipped["too_long"] = skipped.get("too_long", 0) + 1
            continue
        yield pair


def greedy_bodies(
    model: torch.nn.Module, selected: list[Pair], direction: Direction, batch_size: int, progress: bool = False
) -> list[list[int]]:
    """The body the model writes greedily after each pair's prompt, at most as long as its reference;
    `batch_size` pairs decode together."""
    cfg = model.cfg
    if direction is Direction.FORWARD:
        stop_ids = (vocab.RAW_CLOSE, vocab.EOS)
        allowed_ids = raw_output_ids()
    else:
        stop_ids = (vocab.COMPRESSED_CLOSE, vocab.EOS)
        allowed_ids = [*range(vocab.SYMBOL_OFFSET, cfg.vocab_size), *stop_ids]
    bodies: list[list[int]] = [[] for _ in selected]

    def collector(body: list[int]):
        def accept(token: int) -> bool:
            if token in stop_ids:
                return True
            body.append(token)
            return False

        return accept

    rows = [Row(p.prompt(direction).tolist(), len(p.target(direction)), collector(b)) for p, b in zip(selected, bodies)]
    with tqdm(total=len(rows), desc=f"translate {direction.value}", unit="doc", disable=None if progress else True) as bar:
        for start in range(0, len(rows), batch_size):
            for _ in decode_rows(model, rows[start : start + batch_size], allowed_ids):
                pass
            bar.update(len(rows[start : start + batch_size]))
    return bodies


def compare(written: list[int], reference: np.ndarray) -> int:
    """Positions where `written` equals `reference`."""
    n = min(len(written), len(reference))
    return int((np.asarray(written[:n]) == reference[:n]).sum())


@torch.no_grad()
def probe_translation(
    model: torch.nn.Module,
    docs: Iterable[Any],
    compressor: Any,
    max_doc_bytes: int = 256,
    batch_size: int = 8,
    progress: bool = False,
) -> TranslationReport:
    """Both directions of the translation probe over `docs` (Documents or (id, bytes) pairs)."""
    if model.cfg.vocab_size < vocab.vocab_size(compressor.alphabet_size):
        raise UserError(
            f"the model has {model.cfg.vocab_size} ids but compressor '{compressor.name}' needs "
            f"{vocab.vocab_size(compressor.alphabet_size)}: it was not trained on this compressor's symbols"
        )
    model.eval()
    report = TranslationReport()
    max_len = model.cfg.max_seq_len
    selected = list(pairs(docs, compressor, max_doc_bytes, max_len, report.skipped))
    for direction, tally in ((Direction.FORWARD, report.forward), (Direction.REVERSE, report.reverse)):
        for pair, written in zip(selected, greedy_bodies(model, selected, direction, batch_size, progress)):
            reference = pair.target(direction)
            matched = compare(written, reference)
            tally.documents += 1
            tally.matched += matched
            tally.positions += len(reference)
            tally.written += min(len(written), len(reference))
            tally.exact += int(matched == len(reference) and len(written) == len(reference))
            tally.raw_bytes += len(pair.raw)
    _teacher_forced(model, selected, report, batch_size)
    return report


def _teacher_forced(model: torch.nn.Module, selected: list[Pair], report: TranslationReport, batch_size: int) -> None:
    """Nats of each direction's body given its prompt, and of the plain raw view."""
    context = model.cfg.max_seq_len
    for direction, tally in ((Direction.FORWARD, report.forward), (Direction.REVERSE, report.reverse)):
        framed = [Framed(p.doc_id, p.prompt(direction), p.target(direction), len(p.raw)) for p in selected]
        tally.nats = math.fsum(d.nats for d in score(model, framed, context, context, batch_size))
    plain = [frame(p.doc_id, vocab.ids_to_bytes(p.raw), View.RAW) for p in selected]
    nats = math.fsum(d.nats for d in score(model, plain, context, context, batch_size))
    report.raw = DirectionScore(documents=len(selected), nats=nats, raw_bytes=sum(len(p.raw) for p in selected))
