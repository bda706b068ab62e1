"""Audit: what a run's batches hold, read back from the batches themselves (not from the packer).

    audit = StreamAudit(seq_len=512)
    for step in range(steps):
        audit.add(step, loader.next_batch(step))
    audit.report(window=10)

Per step: positions in compressed views, in raw views and padding. Per row: the row's batches
tile its stream, so a unit cut by a row end is joined with its continuation in the same row of
the next batch; a unit holding both views (`<raw>` and `<compressed>`) is a translation pair, and
it is whole when it lies in one row. Parallel pairs are two units and are not counted here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from proxylm import vocab
from proxylm.data.batch import Batch


@dataclass
class _RowTrack:
    open_unit: list[np.ndarray] = field(default_factory=list)  # ids of the unit still open at the row end
    rows_spanned: int = 0


@dataclass
class StreamAudit:
    seq_len: int
    steps: dict[int, np.ndarray] = field(default_factory=lambda: defaultdict(lambda: np.zeros(4, dtype=np.int64)))
    pairs_whole: int = 0
    pairs_cut: int = 0  # pairs no longer than a row that a row end cut
    pairs_too_long: int = 0
    rows: dict[int, _RowTrack] = field(default_factory=lambda: defaultdict(_RowTrack))
    documents_per_batch: list[int] = field(default_factory=list)

    def add(self, step: int, batch: Batch, row_offset: int = 0) -> None:
        """One micro-batch of `step`; `row_offset` names its first row (for several micro-batches or ranks)."""
        ids = batch.ids.numpy()
        counts = self.steps[step]  # compressed, raw, padding, all positions
        counts += [int(batch.is_compressed.sum()), int(batch.is_raw.sum()), int((ids == vocab.PAD).sum()), ids.size]
        starts = (ids == vocab.BOS).sum()
        self.documents_per_batch.append(int(starts))
        for b in range(ids.shape[0]):
            self._track_row(self.rows[row_offset + b], ids[b])

    def _track_row(self, track: _RowTrack, row: np.ndarray) -> None:
        bos = np.flatnonzero(row == vocab.BOS)
        first_start = bos[0] if len(bos) else len(row)
        if track.open_unit:  # the row starts with the continuation of the last row's open unit
            continuation = row[:first_start]
            track.open_unit.append(continuation)
            track.rows_spanned += 1
            if len(bos) or (continuation == vocab.EOS).any():
                self._close(track)
        for a, b in zip(bos, list(bos[1:]) + [None]):
            body = row[a:b]
            if b is None and not (body == vocab.EOS).any():
                track.open_unit, track.rows_spanned = [body], 1  # goes on in the next row
            else:
                self._count(body, rows_spanned=1)

    def _close(self, track: _RowTrack) -> None:
        self._count(np.concatenate(track.open_unit), track.rows_spanned)
        track.open_unit, track.rows_spanned = [], 0

    def _count(self, unit: np.ndarray, rows_spanned: int) -> None:
        unit = unit[unit != vocab.PAD]
        if not ((unit == vocab.RAW_OPEN).any() and (unit == vocab.COMPRESSED_OPEN).any()):
            return
        if len(unit) > self.seq_len:
            self.pairs_too_long += 1
        elif rows_spanned > 1:
            self.pairs_cut += 1
        else:
            self.pairs_whole += 1

    def window_shares(self, window: int, since: int = 0) -> np.ndarray:
        """Compressed share of view positions in each full window of `window` steps from `since` on."""
        steps = np.array(sorted(s for s in self.steps if s >= since))
        counts = np.array([self.steps[s] for s in steps])
        n = len(steps) // window
        grouped = counts[: n * window].reshape(n, window, 4).sum(axis=1)
        return grouped[:, 0] / np.maximum(grouped[:, 0] + grouped[:, 1], 1)

    def padding_share(self) -> float:
        totals = np.sum([c for c in self.steps.values()], axis=0)
        return float(totals[2] / max(totals[3], 1))

    def pairs_whole_share(self) -> float | None:
        """Share of the translation pairs no longer than a row that lie whole in one row."""
        fitting = self.pairs_whole + self.pairs_cut
        return self.pairs_whole / fitting if fitting else None
