
import numpy as np
import pytest
import torch

from proxylm import vocab
from proxylm.config import ConfigError
from proxylm.data.mixer import MixPoint, Mode, Order, build_units, plan_views
from proxylm.data.packer import Group, PackConfig, RowPacker, head_offsets, stack_rows

X = vocab.IGNORE_INDEX
BOS, EOS, PAD = vocab.BOS, vocab.EOS, vocab.PAD
RO, RC, CO, CC = vocab.RAW_OPEN, vocab.RAW_CLOSE, vocab.COMPRESSED_OPEN, vocab.COMPRESSED_CLOSE
a, b, c, d = (int(i) for i in vocab.bytes_to_ids(b"abcd"))
s5, s6, s7 = (int(i) for i in vocab.symbols_to_ids(np.array([5, 6, 7])))


class Packer:
    """Rows of one RowPacker stacked into batches (the loader gives each row its own)."""

    def __init__(self, cfg, n_main_heads=1, n_raw_heads=0):
        self.cfg, self.heads = cfg, (n_main_heads, n_raw_heads)
        self.rows = RowPacker(cfg, len(head_offsets(n_main_heads, n_raw_heads)))
        self.queue = []

    def add(self, unit, paired=False):
        self.queue.append(Group([unit], paired))

    def ready(self):
        placed = len(self.rows) + sum(g.length for g in self.queue)
        return placed >= (self.cfg.batch_size - 1) * self.cfg.seq_len + self.rows.needed

    def pop_batch(self):
        rows = []
        for _ in range(self.cfg.batch_size):
            self.rows.fill(lambda: self.queue.pop(0))
            rows.append(self.rows.pop_row())
        n_main, n_raw = self.heads
        return stack_rows(rows, seq_len=self.cfg.seq_len, n_main_heads=n_main, n_raw_heads=n_raw)


def units(mode, raw: bytes, symbols, compressed: bool, order=Order.RAW_FIRST):
    """Units of one document: `compressed` picks the compressed-leaning draw."""
    plan = plan_views(MixPoint(mode, order, 0.5), 0.0 if compressed else 0.99, 0.0)
    return build_units(plan, np.frombuffer(raw, dtype=np.uint8), np.array(symbols, dtype=np.uint32))


def hand_checked_batch():
    packer = Packer(PackConfig(seq_len=16, batch_size=1), n_main_heads=2, n_raw_heads=1)
    for unit in (units(Mode.TRANSLATION, b"abc", [5], compressed=True)
                 + units(Mode.SENTINEL, b"d", [9], compressed=False)
                 + units(Mode.SENTINEL, b"zz", [6, 7], compressed=True)):
        packer.add(unit)
    return packer.pop_batch()


def test_hand_checked_row():
    batch = hand_checked_batch()
    # the row: translation doc (10 ids), sentinel raw doc (5), first id of a compressed doc; then lookahead
    assert batch.ids[0].tolist() == [BOS, RO, a, b, c, RC, CO, s5, CC, EOS, BOS, RO, d, RC, EOS, BOS]
    assert batch.doc[0].tolist() == [0] * 10 + [1] * 5 + [2]
    assert batch.pos[0].tolist() == list(range(10)) + list(range(5)) + [0]
    assert batch.targets[0].tolist() == [
        # head 0 crosses the view boundary (RC -> CO) but never a document boundary
        [RO, a, b, c, RC, CO, s5, CC, EOS, X, RO, d, RC, EOS, X, CO],
        # head 1 (t+2) is also masked across the view boundary; bos/eos join their neighbouring view
        [a, b, c, RC, X, X, CC, EOS, X, X, d, RC, EOS, X, X, s6],
        # raw head (t+3): only inside one raw view, sentinels included, bos/eos excluded
        [X, c, RC, X, X, X, X, X, X, X, X, X, X, X, X, X],
    ]
    third, half = 1 / 3, 0.5
    expected_weights = [
        [half, third, third, half, 1, 1, half, half, 1, 0, half, half, half, 1, 0, half],
        [half, third, third, half, 0, 0, half, half, 0, 0, half, half, half, 0, 0, half],
        [0, third, third, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert torch.allclose(batch.weights[0], torch.tensor(expected_weights))
    assert batch.is_raw[0].tolist() == [True] * 5 + [False] * 5 + [True] * 3 + [False] * 3
    assert batch.is_compressed[0].tolist() == [False] * 5 + [True] * 3 + [False] * 7 + [True]
    assert batch.raw_bytes == 4


def test_batch_types_and_shapes():
    batch = hand_checked_batch()
    for name in ("ids", "pos", "doc", "targets"):
        assert getattr(batch, name).dtype == torch.int64
    assert batch.weights.dtype == torch.float32 and batch.is_raw.dtype == torch.bool
    assert batch.targets.shape == batch.weights.shape == (1, 3, 16)


def test_parallel_views_are_separate_documents_translation_views_are_one():
    for mode, n_docs in ((Mode.PARALLEL, 2), (Mode.TRANSLATION, 1)):
        packer = Packer(PackConfig(seq_len=12, batch_size=1))
        for unit in units(mode, b"ab", [5], compressed=True) * 2:
            packer.add(unit)
        batch = packer.pop_batch()
        ids, doc = batch.ids[0], batch.doc[0]
        raw_doc = doc[ids == RO][0]
        compressed_doc = doc[ids == CO][0]
        assert (raw_doc != compressed_doc) == (n_docs == 2), mode
        assert batch.targets[0, 0, (ids == RC).nonzero()[0, 0]] == (CO if n_docs == 1 else EOS)


def test_long_documents_are_split_across_rows_and_batches():
    long_raw = bytes(range(65, 65 + 45))
    stream_units = units(Mode.SENTINEL, long_raw, [1], False) + units(Mode.SENTINEL, b"xy", [1], False)
    stream = np.concatenate([u.ids for u in stream_units * 3])
    packer = Packer(PackConfig(seq_len=16, batch_size=2), n_main_heads=2)
    for unit in stream_units * 3:
        packer.add(unit)
    rows = []
    while packer.ready():
        batch = packer.pop_batch()
        rows.extend(batch.ids)
        for row in range(2):
            # every row starts a document at position 0; the last position predicts the next row's first id
            assert batch.doc[row, 0] == 0 and batch.pos[row, 0] == 0
            assert (batch.pos[row] < 16).all()
    tiled = torch.cat(rows).numpy()
    assert np.array_equal(tiled, stream[: len(tiled)])  # nothing dropped, nothing repeated
    assert len(tiled) >= 3 * 16
    first_batch = Packer(PackConfig(seq_len=16, batch_size=2), n_main_heads=2)
    for unit in stream_units * 3:
        first_batch.add(unit)
    batch = first_batch.pop_batch()
    assert batch.targets[0, 0, 15] == batch.ids[1, 0]  # row 0 ends mid-document
    assert batch.targets[0, 1, 15] == batch.ids[1, 1]


def test_padding_below_a_threshold():
    packer = Packer(PackConfig(seq_len=8, batch_size=2, pad_below=4), n_main_heads=1, n_raw_heads=1)
    for unit in units(Mode.SENTINEL, b"ab", [1], compressed=False) * 4:  # 6 ids each
        packer.add(unit)
    batch = packer.pop_batch()
    pad = batch.ids == PAD
    assert pad.tolist() == [[False] * 6 + [True] * 2] * 2  # 2 free positions < 4: padded
    assert (batch.doc[pad] == -1).all() and (batch.pos[pad] == 0).all()
    assert (batch.targets.permute(0, 2, 1)[pad] == X).all()
    assert (batch.weights.sum(1)[pad] == 0).all()
    assert batch.targets[0, 0, 5] == X  # eos before padding predicts nothing
    assert batch.raw_bytes == 4


def test_weights_are_normalised_over_valid_heads():
    rng = np.random.default_rng(0)
    packer = Packer(PackConfig(seq_len=32, batch_size=4, pad_below=3), n_main_heads=3, n_raw_heads=2)
    modes = list(Mode)
    while not packer.ready():
        raw = rng.integers(0, 256, rng.integers(0, 30), dtype=np.uint8).tobytes()
        symbols = rng.integers(0, 1000, rng.integers(0, 10))
        for unit in units(modes[rng.integers(len(modes))], raw, symbols, bool(rng.integers(2)), Order.RANDOM):
            packer.add(unit)
    batch = packer.pop_batch()
    valid = batch.targets != X  # (B, H, T)
    total = batch.weights.sum(1)
    assert torch.allclose(total[valid.any(1)], torch.ones(())) and (total[~valid.any(1)] == 0).all()
    n_valid = valid.sum(1, keepdim=True).clamp(min=1)
    assert torch.allclose(batch.weights, valid / n_valid)


def test_errors():
    with pytest.raises(ValueError, match="a row needs 17"):
        RowPacker(PackConfig(seq_len=16, batch_size=1), 1).pop_row()
    with pytest.raises(ConfigError, match="pack.seq_len"):
        PackConfig(seq_len=1)
    with pytest.raises(ConfigError, match="pack.pad_below"):
        PackConfig(seq_len=8, pad_below=8)
    with pytest.raises(ConfigError, match="n_main_heads >= 1"):
        head_offsets(0, 1)


# ---- whole pairs ----------------------------------------------------------------------------------


def pair(n_raw: int, n_symbols: int) -> Group:
    return Group(units(Mode.TRANSLATION, b"p" * n_raw, [5] * n_symbols, compressed=False), paired=True)


def single(n_raw: int) -> Group:
    return Group(units(Mode.SENTINEL, b"s" * n_raw, [1], compressed=False), paired=False)


def row_units(row) -> list[tuple[int, bool, bool]]:
    """(unit id, starts with bos, ends with eos) of each unit in a row, padding left out."""
    unit, ids = row["unit"][:-1], row["ids"][:-1]  # the last id is lookahead
    found = []
    for u in dict.fromkeys(unit.tolist()):
        if u < 0:
            continue
        where = np.flatnonzero(unit == u)
        found.append((u, ids[where[0]] == BOS, ids[where[-1]] == EOS))
    return found


def test_a_pair_that_does_not_fit_the_row_end_waits_while_a_later_group_fills_it():
    packer = RowPacker(PackConfig(seq_len=32, batch_size=1, lookahead_units=3), lookahead=1)
    queue = [single(20), pair(10, 4), single(2), single(40), pair(3, 3)] + [single(1)] * 20  # the pair: 20 ids
    draw = lambda: queue.pop(0)  # noqa: E731
    packer.fill(draw)
    row = packer.pop_row()
    # single(20) = 24 ids leaves 8: the pair waits, single(2) (6 ids) fits whole and goes first, then
    # single(40) may be cut: it fills the last 2 positions and goes on in the next rows
    assert packer.stats.reordered == 2 and [u for u, _, _ in row_units(row)] == [0, 1, 2]
    rows = []
    for _ in range(3):
        packer.fill(draw)
        rows.append(packer.pop_row())
    whole_pairs = 0
    for r in rows:
        unit, ids = r["unit"][:-1], r["ids"][:-1]
        for u in set(unit[ids == vocab.COMPRESSED_OPEN].tolist()):  # the pairs (singles here are raw)
            body = ids[unit == u]
            assert body[0] == BOS and body[-1] == EOS and (body == RO).any() and (body == vocab.COMPRESSED_OPEN).any()
            whole_pairs += 1
    assert whole_pairs == packer.stats.pairs_fitting >= 1  # each pair whole in one row
    assert packer.stats.pairs_cut == 0 and packer.stats.padding == 0


def test_only_pairs_left_pads_the_row_end_and_longer_pairs_are_cut():
    packer = RowPacker(PackConfig(seq_len=32, batch_size=1, lookahead_units=2), lookahead=1)
    queue = [pair(14, 0) for _ in range(6)] + [pair(40, 10)] + [pair(14, 0) for _ in range(8)]  # 20-id pairs, one of 56
    cut_units = set()
    for _ in range(6):
        packer.fill(lambda: queue.pop(0))
        row = packer.pop_row()
        cut_units |= {u for u, starts, ends in row_units(row) if not (starts and ends)}
    assert len(cut_units) == 1  # only the pair longer than a row is cut
    assert packer.stats.padding > 0 and packer.stats.pairs_cut == 0 and packer.stats.pairs_too_long == 1


@pytest.mark.parametrize("whole_units", [False, True])
def test_whole_units_keeps_single_units_whole_and_fills_row_ends_with_later_ones(whole_units):
    rng = np.random.default_rng(0)
    queue = [single(int(n)) for n in rng.integers(2, 25, 300)]  # 6..28 ids each, rows of 64
    packer = RowPacker(PackConfig(seq_len=64, batch_size=1, whole_units=whole_units), lookahead=1)
    cut = 0
    for _ in range(20):
        packer.fill(lambda: queue.pop(0))
        cut += sum(not (starts and ends) for _, starts, ends in row_units(packer.pop_row()))
    if whole_units:
        assert cut == 0 and packer.stats.reordered > 0 and packer.stats.padding < 0.1 * packer.stats.positions
    else:
        assert cut > 0 and packer.stats.padding == 0


def test_row_packer_state_round_trip_continues_the_same_rows():
    rng = np.random.default_rng(0)
    groups = [pair(int(n), int(n) // 3) if rng.random() < 0.5 else single(int(n)) for n in rng.integers(1, 40, 300)]
    cfg = PackConfig(seq_len=24, batch_size=1, lookahead_units=3)
    drawn = [0]

    def draw():
        drawn[0] += 1
        return groups[drawn[0] - 1]

    original = RowPacker(cfg, lookahead=2)
    for _ in range(5):
        original.fill(draw)
        original.pop_row()
    state, resume_at = through_torch_save(original.state_dict()), drawn[0]
    rest = [original.pop_row() for _ in range(20) if original.fill(draw) is None]
    restored = RowPacker(cfg, lookahead=2)
    restored.load_state_dict(state)
    drawn[0] = resume_at
    for row in rest:
        restored.fill(draw)
        again = restored.pop_row()
        assert all(np.array_equal(row[k], again[k]) for k in row)
    assert original.stats == restored.stats


def through_torch_save(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)
