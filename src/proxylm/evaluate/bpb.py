"""Bits per raw byte, scored with a sliding window (DESIGN.md section 6).

    result = evaluate_bpb(model, docs, context=1024, stride=512)
    result.bpb, result.documents[0].bpb

Design choices:
- Every document is framed as in training and scored on its *body* targets only
  (nanochat-style): `<bos> <raw> bytes </raw> <eos>` scores the bytes, not `</raw>` nor
  `<eos>`. The end of a document is not text, and leaving it out keeps byte, proxy and
  token models on the same footing (none of them is scored on where a document ends).
- BPB = (sum of cross-entropy nats over the scored targets) / (ln 2 x raw bytes). Nats and
  bytes are summed separately over all documents, so the overall figure is byte-weighted,
  never an average of per-document ratios.
- The cross-entropy is over the model's whole vocabulary: probability a proxy model puts on
  compressed symbols inside a raw view is a real loss, not renormalised away.
- Views (`View`): `raw` (the headline), `compressed` (diagnostic: nats over the symbols of the
  compressed view, still divided by raw bytes), `tokens` (a vanilla token model: `<bos>
  symbols <eos>`, nats over raw bytes) and `bytes` (a vanilla byte model: `<bos> bytes <eos>`).
  `view_for_schedule` picks the right one from a checkpoint's training schedule.
- Sliding window: a window is the document's header (`<bos> <raw>`) pinned at positions 0..
  followed by a slice of the body, so the model always reads a view the way it was trained to.
  The first window scores every target it holds; each next window moves by `stride` body
  tokens and scores only the targets no earlier window scored. Every target is scored
  exactly once, with at least `context - header - stride` body tokens of left context.
- Windows of many documents are batched together, padded on the right (harmless under a
  causal mask); padding targets are never scored.
- `EvalCheckpoint` reads what evaluation needs beside the weights: the training schedule
  (a vanilla schedule means no sentinels: `bytes` or `tokens`) and the compressor the run's
  shards were prepared with, and the held-out share of that preparation. `--ckpt` may name a checkpoint, a checkpoints directory (its
  newest) or a run directory.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from proxylm import vocab
from proxylm.errors import UserError
from proxylm.io import read_json

LN2 = math.log(2.0)


class View(enum.Enum):
    """How a document is framed for scoring."""

    RAW = "raw"  # <bos> <raw> bytes </raw> <eos>
    COMPRESSED = "compressed"  # <bos> <compressed> symbols </compressed> <eos>
    TOKENS = "tokens"  # <bos> symbols <eos> (vanilla token model)
    BYTES = "bytes"  # <bos> bytes <eos> (vanilla byte model)

    @property
    def needs_compressor(self) -> bool:
        return self in (View.COMPRESSED, View.TOKENS)


HEADERS: dict[View, tuple[int, ...]] = {
    View.RAW: (vocab.BOS, vocab.RAW_OPEN),
    View.COMPRESSED: (vocab.BOS, vocab.COMPRESSED_OPEN),
    View.TOKENS: (vocab.BOS,),
    View.BYTES: (vocab.BOS,),
}


@dataclass(frozen=True)
class Framed:
    """One document ready to score: a header to pin and the body whose targets are scored."""

    doc_id: str
    header: np.ndarray  # (h,) int64
    body: np.ndarray  # (n,) int64
    raw_bytes: int  # the denominator: bytes of the raw document, whatever the view


def frame(doc_id: str, data: bytes, view: View, compressor: Any = None) -> Framed:
    """Frame one document's bytes in `view` (the compressed views need the compressor)."""
    if view.needs_compressor:
        if compressor is None:
            raise UserError(f"view '{view.value}' needs a compressor (the checkpoint records none)")
        body = vocab.symbols_to_ids(compressor.encode(data))
    else:
        body = vocab.bytes_to_ids(data)
    header = np.asarray(HEADERS[view], dtype=np.int64)
    return Framed(doc_id, header, body, len(data))


@dataclass
class DocumentBPB:
    doc_id: str
    raw_bytes: int
    targets: int  # scored targets: bytes for the raw view, symbols for compressed views
    nats: float

    @property
    def bpb(self) -> float:
        return self.nats / (LN2 * self.raw_bytes) if self.raw_bytes else float("nan")


@dataclass
class BPBResult:
    view: View
    context: int
    stride: int
    documents: list[DocumentBPB] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    @property
    def nats(self) -> float:
        return math.fsum(d.nats for d in self.documents)

    @property
    def raw_bytes(self) -> int:
        return sum(d.raw_bytes for d in self.documents)

    @property
    def targets(self) -> int:
        return sum(d.targets for d in self.documents)

    @property
    def bpb(self) -> float:
        return self.nats / (LN2 * self.raw_bytes) if self.raw_bytes else float("nan")

    def to_dict(self, per_document: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bpb": self.bpb,
            "view": self.view.value,
            "documents": len(self.documents),
            "raw_bytes": self.raw_bytes,
            "targets": self.targets,
            "nats": self.nats,
            "context": self.context,
            "stride": self.stride,
            "skipped": dict(self.skipped),
        }
        if per_document:
            out["per_document"] = [
                {"id": d.doc_id, "bpb": d.bpb, "raw_bytes": d.raw_bytes, "targets": d.targets, "nats": d.nats}
                for d in self.documents
            ]
        return out


@dataclass(frozen=True)
class Window:
    """One forward's worth of a document: ids to feed and which of their targets to score."""

    doc_index: int
    ids: np.ndarray  # (L,) header + body slice
    targets: np.ndarray  # (L,) next id at each position, IGNORE_INDEX where not scored


def windows(doc: Framed, doc_index: int, context: int, stride: int) -> Iterator[Window]:
    """Sliding windows over one document; together they score each body target exactly once."""
    h, n = len(doc.header), len(doc.body)
    span = context - h  # body tokens a window can hold
    scored_until = 0
    begin = 0
    while scored_until < n:
        end = min(begin + span, n)
        ids = np.concatenate([doc.header, doc.body[begin:end]])  # (h + end - begin,)
        targets = np.full(len(ids), vocab.IGNORE_INDEX, dtype=np.int64)
        # Position h - 1 + (j - begin) predicts body[j]; only j in [scored_until, end) are new.
        first = h - 1 + (scored_until - begin)
        targets[first : first + end - scored_until] = doc.body[scored_until:end]
        yield Window(doc_index, ids, targets)
        scored_until = end
        begin += stride


def check_window(context: int, stride: int, header_len: int, max_seq_len: int | None) -> None:
    if max_seq_len is not None and context > max_seq_len:
        raise UserError(f"--context {context} is longer than the model's max_seq_len {max_seq_len}")
    if context <= header_len:
        raise UserError(f"--context {context} leaves no room for text after the {header_len}-id header")
    if not 1 <= stride <= context - header_len:
        raise UserError(f"--stride {stride} must be in [1, context - {header_len}] = [1, {context - header_len}]")


def model_max_seq_len(model: Any) -> int | None:
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    return getattr(cfg, "max_seq_len", None)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def window_nats(model: torch.nn.Module, batch: list[Window]) -> list[tuple[float, int]]:
    """Summed target nats and target count of each window, in one padded forward."""
    device = model_device(model)
    width = max(len(w.ids) for w in batch)
    ids = torch.full((len(batch), width), vocab.PAD, dtype=torch.long)
    targets = torch.full((len(batch), width), vocab.IGNORE_INDEX, dtype=torch.long)
    for row, w in enumerate(batch):
        ids[row, : len(w.ids)] = torch.from_numpy(w.ids)
        targets[row, : len(w.targets)] = torch.from_numpy(w.targets)
    ids, targets = ids.to(device), targets.to(device)
    logits = model(ids).logits  # (B, T, V)
    scored = targets != vocab.IGNORE_INDEX  # (B, T)
    nats = torch.zeros(targets.shape, dtype=torch.float64, device=device)
    nats[scored] = F.cross_entropy(logits[scored].float(), targets[scored], reduction="none").double()
    return list(zip(nats.sum(dim=1).tolist(), scored.sum(dim=1).tolist()))


def evaluate_bpb(
    model: torch.nn.Module,
    docs: Iterable[Any],
    context: int | None = None,
    stride: int | None = None,
    view: View = View.RAW,
    compressor: Any = None,
    batch_size: int = 8,
    progress: bool = False,
) -> BPBResult:
    """Bits per raw byte of `model` over `docs`, each target scored once.

    `docs` holds corpus Documents (`.id`, `.data`) or (id, bytes) pairs. `context` defaults to
    the model's max_seq_len and `stride` to half the body span. Empty documents are skipped and
    counted under `skipped["empty"]`.
    """
    context, stride = resolve_window(model, context, stride, len(HEADERS[view]))
    result = BPBResult(view=view, context=context, stride=stride)

    def framed() -> Iterator[Framed]:
        for doc_id, data in document_pairs(docs):
            if not data:
                result.skipped["empty"] = result.skipped.get("empty", 0) + 1
                continue
            yield frame(doc_id, data, view, compressor)

    result.documents = score(model, framed(), context, stride, batch_size, progress)
    return result


def document_pairs(docs: Iterable[Any]) -> Iterator[tuple[str, bytes]]:
    for doc in docs:
        yield (doc.id, doc.data) if hasattr(doc, "data") else (str(doc[0]), bytes(doc[1]))


def resolve_window(model: Any, context: int | None, stride: int | None, header_len: int) -> tuple[int, int]:
    """Default and check the window: context = the longest span the model was trained on (recorded
    by the trainer: short pieces never fill a row) or else max_seq_len; stride = half the body span."""
    max_len = model_max_seq_len(model)
    trained = getattr(model, "trained_context", None)
    context = context or (min(trained, max_len or trained) if trained else max_len)
    if context is None:
        raise UserError("--context is required: the model does not say its max_seq_len")
    stride = stride or max(1, (context - header_len) // 2)
    check_window(context, stride, header_len, max_len)
    return context, stride


def score(
    model: torch.nn.Module,
    docs: Iterable[Framed],
    context: int,
    stride: int,
    batch_size: int = 8,
    progress: bool = False,
) -> list[DocumentBPB]:
    """Nats of every framed document's body targets, in document order."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    pending: list[Window] = []
    owners: list[DocumentBPB] = []  # the document each window belongs to
    bar = tqdm(desc="bpb", unit="doc", disable=None if progress else True)

    def flush() -> None:
        for w, (nats, count) in zip(pending, window_nats(model, pending)):
            owners[w.doc_index].nats += nats
            owners[w.doc_index].targets += count
        pending.clear()

    try:
        for doc in docs:
            if len(doc.header) >= context:
                raise UserError(f"document {doc.doc_id}: its {len(doc.header)}-id header does not fit --context {context}")
            owners.append(DocumentBPB(doc.doc_id, doc.raw_bytes, 0, 0.0))
            for w in windows(doc, len(owners) - 1, context, stride):
                pending.append(w)
                if len(pending) == batch_size:
                    flush()
            bar.update(1)
        if pending:
            flush()
    finally:
        bar.close()
        model.train(was_training)
    return owners


# ---- checkpoints ----------------------------------------------------------------------------------


def view_for_schedule(schedule: dict[str, Any] | None) -> View:
    """The view a model was trained to read documents in, from its schedule (plain data).

    A vanilla last phase has no sentinels: a token model if it ends fully compressed, else a
    byte model. Every other schedule reads raw views between sentinels.
    """
    phases = (schedule or {}).get("phases") or []
    if not phases or phases[-1].get("mode") != "vanilla":
        return View.RAW
    last = phases[-1]
    final = last["rate_end"] if last.get("rate_end") is not None else last.get("rate_start", 0.0)
    return View.TOKENS if final >= 1.0 else View.BYTES


def resolve_checkpoint(path: str | Path) -> Path:
    """A model directory from --ckpt: a checkpoint (or its model.json), the `latest` pointer, a
    checkpoints directory or a run directory."""
    from proxylm.train.checkpoint import LATEST, latest_checkpoint

    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_file() and path.name == "model.json":
        return path.parent
    if path.is_file() and path.name == LATEST:
        return latest_checkpoint(path.parent) or path
    if path.is_dir() and not (path / "model.json").is_file():
        for candidates in (path, path / "checkpoints"):
            found = latest_checkpoint(candidates) if candidates.is_dir() else None
            if found is not None:
                return found
    return path


@dataclass
class EvalCheckpoint:
    """A model to evaluate and what its training run recorded about its data."""

    path: Path
    model: torch.nn.Module
    data_info: dict[str, Any] | None  # the checkpoint's data.json: shards and compressor config
    schedule: dict[str, Any] | None  # the training config's schedule section

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "EvalCheckpoint":
        from proxylm.model_io import load_model

        path = resolve_checkpoint(path)
        model = load_model(path, device=device).eval()
        data_info = read_json(path / "data.json")
        model.trained_context = (data_info or {}).get("trained_context")  # the default window (resolve_window)
        return cls(path, model, data_info, _train_schedule(path))

    @property
    def view(self) -> View:
        return view_for_schedule(self.schedule)

    def compressor(self, shards: str | Path | None = None) -> Any:
        """The compressor of the training shards (or of the prepared `shards` directory given)."""
        from proxylm import compress
        from proxylm.data.shards import Shards

        if shards is not None:
            return Shards.open(shards).compressor()
        if not self.data_info or "compressor" not in self.data_info:
            raise UserError(f"{self.path} records no compressor (no data.json); pass --shards DIR of a preparation")
        return compress.load(self.data_info["compressor"]["config"], Path(self.data_info["shards"]))

    def val_fraction(self, shards: str | Path | None = None) -> float | None:
        """The held-out share of the training preparation (or of `shards`), None if it is not on disk."""
        from proxylm.data.shards import MANIFEST

        path = Path(shards) / MANIFEST if shards is not None else (self.data_info or {}).get("manifest")
        manifest = read_json(path) if path else None
        return None if manifest is None else manifest.get("val_fraction")


def _train_schedule(path: Path) -> dict[str, Any] | None:
    from proxylm.train.checkpoint import TRAIN_STATE, read_train_state

    if not (path / TRAIN_STATE).is_file():
        return None
    return read_train_state(path).get("config", {}).get("schedule")
