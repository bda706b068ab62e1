import dataclasses

import numpy as np
import pytest
import torch

from proxylm import vocab
from proxylm.config import ConfigError
from proxylm.data.mixer import MixPoint, Mode, Order, build_units, plan_views
from proxylm.data.packer import Packer, PackConfig, head_offsets

X = vocab.IGNORE_INDEX
BOS, EOS, PAD = vocab.BOS, vocab.EOS, vocab.PAD
RO, RC, CO, CC = vocab.RAW_OPEN, vocab.RAW_CLOSE, vocab.COMPRESSED_OPEN, vocab.COMPRESSED_CLOSE
a, b, c, d = (int(i) for i in vocab.bytes_to_ids(b"abcd"))
s5, s6, s7 = (int(i) for i in vocab.symbols_to_ids(np.array([5, 6, 7])))


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


def test_state_round_trip_continues_the_same_batches():
    def fill(packer, seed):
        rng = np.random.default_rng(seed)
        for _ in range(20):
            for unit in units(Mode.TRANSLATION, rng.integers(0, 256, rng.integers(1, 20), dtype=np.uint8).tobytes(),
                              [3, 4], bool(rng.integers(2))):
                packer.add(unit)

    cfg = PackConfig(seq_len=8, batch_size=2, pad_below=2)
    original = Packer(cfg, n_main_heads=1, n_raw_heads=1)
    fill(original, 0)
    original.pop_batch()
    restored = Packer(cfg, n_main_heads=1, n_raw_heads=1)
    restored.load_state_dict(original.state_dict())
    fill(original, 1)
    fill(restored, 1)
    while original.ready():
        one, two = original.pop_batch(), restored.pop_batch()
        for field in dataclasses.fields(one):
            x, y = getattr(one, field.name), getattr(two, field.name)
            assert torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
    assert not restored.ready()


def test_errors():
    with pytest.raises(ValueError, match="a batch needs 17"):
        Packer(PackConfig(seq_len=16, batch_size=1)).pop_batch()
    with pytest.raises(ConfigError, match="pack.seq_len"):
        PackConfig(seq_len=1)
    with pytest.raises(ConfigError, match="pack.pad_below"):
        PackConfig(seq_len=8, pad_below=8)
    with pytest.raises(ConfigError, match="n_main_heads >= 1"):
        head_offsets(0, 1)
