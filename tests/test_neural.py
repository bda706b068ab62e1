"""The neural proxy: equal-information windows, exact decoding with side information, determinism."""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from proxylm import compress
from proxylm.compress import arith
from proxylm.compress.base import CompressorError
from proxylm.compress.byte_model import CountByteModel, TransformerByteModel, quantize, training_chunks
from proxylm.compress.neural import NeuralCompressor, ShortestReadingWarning, resolve_model_dir
from proxylm.probes.collisions import window_chunks, window_collisions


def stdlib_sources(*names: str) -> list[bytes]:
    import importlib

    return [Path(importlib.import_module(name).__file__).read_bytes() for name in names]


TRAIN = stdlib_sources("json.decoder", "json.encoder", "textwrap", "string", "shlex")
CODE = [doc[:3000] for doc in stdlib_sources("fnmatch", "colorsys", "bisect")]
RNG = np.random.default_rng(0)
ADVERSARIAL = {
    "empty": b"",
    "one byte": b"x",
    "random": RNG.integers(0, 256, 1500, dtype=np.uint8).tobytes(),
    "invalid utf-8": b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x90\x28\xbc" * 20,
    "spaces": b" " * 3000,
    "zeros": b"\x00" * 2000,
    "newlines and tabs": b"\n\t\n\t  \r\n" * 100,
}


@pytest.fixture(scope="module")
def counts() -> CountByteModel:
    return CountByteModel.fit(TRAIN, order=2)


def exact(compressor: NeuralCompressor, doc: bytes) -> bytes:
    symbols, side = compressor.encode_with_side(doc)
    return compressor.decode(symbols, side)


# -- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("window_bits", [8, 12, 16])
def test_real_code_round_trips_exactly_with_side_information(counts, window_bits):
    c = NeuralCompressor(model=counts, window_bits=window_bits)
    for doc, (symbols, side) in zip(CODE, c.encode_many_with_side(CODE)):
        assert c.decode(symbols, side) == doc
        assert symbols.dtype == (np.uint8 if window_bits == 8 else np.uint16)
        assert side.dtype == np.uint8 and len(side) == len(symbols) and int(side.sum()) == len(doc)
        assert len(symbols) < len(doc)  # a model that knows code compresses it


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
@pytest.mark.parametrize("window_bits", [8, 16])
def test_adversarial_bytes_round_trip(counts, name, window_bits):
    c = NeuralCompressor(model=counts, window_bits=window_bits)
    assert exact(c, ADVERSARIAL[name]) == ADVERSARIAL[name]


@pytest.mark.parametrize("name", ["one byte", "invalid utf-8", "newlines and tabs"])
def test_round_trip_without_context_reset(counts, name):
    c = NeuralCompressor(model=counts, reset=False, context_bytes=16)
    assert exact(c, ADVERSARIAL[name]) == ADVERSARIAL[name]
    assert exact(c, CODE[1][:1500]) == CODE[1][:1500]


def test_empty_document_has_no_symbols(counts):
    c = NeuralCompressor(model=counts)
    symbols, side = c.encode_with_side(b"")
    assert symbols.size == 0 and side.size == 0
    assert c.decode(symbols, side) == b""


def test_transformer_model_round_trips(transformer_dir):
    c = compress.build(f"neural:model={transformer_dir},window_bits=16")
    docs = [CODE[0][:200], ADVERSARIAL["invalid utf-8"][:60], b"", b"\x00" * 100]
    for doc, (symbols, side) in zip(docs, c.encode_many_with_side(docs)):
        assert c.decode(symbols, side) == doc


# -- windows ----------------------------------------------------------------------------------------


def test_windows_are_the_longest_byte_runs_that_fit_in_window_bits():
    """With an order-0 model every position has the same table, so the windows can be checked
    with the coder alone: each fits in window_bits bits (within 2 bits of its ideal length) and
    would not fit with the next byte added."""
    model = CountByteModel.fit(TRAIN, order=0)
    table = quantize(model.log_probs[:1])[0]
    c = NeuralCompressor(model=model, window_bits=16)
    doc = CODE[0][:3000]
    symbols, side = c.encode_with_side(doc)
    offsets = np.cumsum(side) - side
    for symbol, offset, count in zip(symbols, offsets, side):
        window = list(doc[offset : offset + count])
        code = arith.encode(window, np.stack([table] * count), 16)
        assert code.bits <= 16
        assert code.bits <= sum(16 - np.log2(table[b]) for b in window) + 2
        assert arith.decode(arith.Code(int(symbol), 16), count, lambda prefix: table, 16) == window
        if offset + count < len(doc) and count < c.cfg.max_window_bytes and (offset + count) % c.cfg.chunk_bytes:
            longer = window + [doc[offset + count]]
            assert arith.encode(longer, np.stack([table] * len(longer)), 16).bits > 16


def test_long_runs_close_at_max_window_bytes(counts):
    c = NeuralCompressor(model=counts, max_window_bytes=20)
    symbols, side = c.encode_with_side(ADVERSARIAL["spaces"])
    assert side.max() == 20 and (side == 20).mean() > 0.5
    assert c.decode(symbols, side) == ADVERSARIAL["spaces"]


def test_windows_never_cross_chunk_boundaries(counts):
    c = NeuralCompressor(model=counts, chunk_bytes=100)
    doc = CODE[2][:1000]
    symbols, side = c.encode_with_side(doc)
    ends = np.cumsum(side)
    assert set(range(100, 1000, 100)) <= set(ends.tolist())
    assert c.decode(symbols, side) == doc


def test_a_rare_first_byte_spans_two_short_symbols(counts):
    """With 8-bit windows a byte rarer than 2^-8 after <bos> cannot fit in one symbol: its window
    takes two, and the side information marks the second with a 0 count."""
    c = NeuralCompressor(model=counts, window_bits=8)
    doc = b"\xfe\xfdabc\xfe"
    symbols, side = c.encode_with_side(doc)
    assert (side == 0).any() and side[0] > 0
    assert c.decode(symbols, side) == doc


def test_context_reset_changes_the_symbols(counts):
    doc = CODE[0][:2000]
    with_reset = NeuralCompressor(model=counts).encode(doc)
    without = NeuralCompressor(model=counts, reset=False, context_bytes=16).encode(doc)
    assert not np.array_equal(with_reset, without)


# -- determinism ------------------------------------------------------------------------------------


def test_symbols_do_not_depend_on_batch_composition(counts, transformer_dir):
    from proxylm.model_io import load_model

    for model in (counts, TransformerByteModel(load_model(transformer_dir))):
        c = NeuralCompressor(model=model)
        doc = CODE[1][:300]
        alone = c.encode_with_side(doc)
        batch = c.encode_many_with_side([CODE[0][:150], doc, ADVERSARIAL["random"][:100], doc])
        for symbols, side in (batch[1], batch[3], c.encode_with_side(doc)):
            assert np.array_equal(symbols, alone[0]) and np.array_equal(side, alone[1])


@pytest.mark.parametrize("length", [8, 16, 64])
def test_encoder_and_decoder_tables_are_bit_identical(transformer_dir, length):
    """The encoder scores whole windows, the decoder only their prefixes (zeros after), in other
    batch compositions and positions: the quantised tables must agree exactly."""
    from proxylm.model_io import load_model

    model = TransformerByteModel(load_model(transformer_dir))
    rng = np.random.default_rng(1)
    windows = rng.integers(0, 256, (70, length), dtype=np.uint8)
    encoder = quantize(model.byte_logits(windows).reshape(-1, 256)).reshape(70, length, 256)
    for j in range(length):
        prefixes = np.zeros((3, length), dtype=np.uint8)
        prefixes[1, :j] = windows[5, :j]
        others = rng.integers(0, 256, (rng.integers(1, 80), length), dtype=np.uint8)
        decoder = quantize(model.byte_logits(np.concatenate([prefixes, others]))[1, j][None])[0]
        assert np.array_equal(decoder, encoder[5, j])


def test_worker_processes_give_the_same_symbols(counts):
    docs = [CODE[i % 3] + bytes([i]) for i in range(24)]  # 72 KB: enough to use the workers
    single = NeuralCompressor(model=counts).encode_many_with_side(docs)
    pooled = NeuralCompressor(model=counts, workers=2)
    try:
        for (a, side_a), (b, side_b) in zip(single, pooled.encode_many_with_side(docs)):
            assert np.array_equal(a, b) and np.array_equal(side_a, side_b)
    finally:
        pooled.close()


# -- decoding without side information --------------------------------------------------------------


def test_without_counts_each_window_reads_as_a_prefix_of_its_bytes(counts):
    c = NeuralCompressor(model=counts)
    doc = CODE[0][:2000]
    with pytest.warns(ShortestReadingWarning):
        reading = c.decode(c.encode(doc))
    assert 0 < len(reading) <= len(doc)
    windows = list(window_chunks(c, [doc]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShortestReadingWarning)
        for (symbol,), chunk in windows[:60]:
            alone = c.decode(np.array([symbol]))
            assert alone and chunk.startswith(alone)


# -- errors -----------------------------------------------------------------------------------------


def test_side_information_that_does_not_match_is_an_error(counts):
    c = NeuralCompressor(model=counts)
    doc = CODE[0][:800]
    symbols, side = c.encode_with_side(doc)
    with pytest.raises(CompressorError, match="one integer per symbol"):
        c.decode(symbols, side[:-1])
    with pytest.raises(CompressorError, match="window 0 has byte count 0"):
        c.decode(symbols, np.concatenate([[0], side[1:]]))
    with pytest.raises(CompressorError, match="outside 0..max_window_bytes"):
        c.decode(symbols, np.where(np.arange(len(side)) == 3, 200, side))
    i = int(np.flatnonzero(side[:-1] > 1)[0])
    for delta in (1, -1):  # move one byte between window i and window i + 1
        moved = side.astype(np.int64)
        moved[i] -= delta
        moved[i + 1] += delta
        with pytest.raises(CompressorError, match=r"neural: window \d+"):
            c.decode(symbols, moved)


def test_decoding_under_another_model_is_an_error(counts):
    doc = CODE[0][:800]
    symbols, side = NeuralCompressor(model=counts).encode_with_side(doc)
    other = NeuralCompressor(model=CountByteModel.fit(TRAIN[:1], order=1))
    with pytest.raises(CompressorError, match=r"neural: window \d+"):
        other.decode(symbols, side)


def test_bad_symbols_and_specs_are_errors(counts, tmp_path):
    c = NeuralCompressor(model=counts, window_bits=12)
    with pytest.raises(CompressorError, match="outside the alphabet"):
        c.decode(np.array([5000]), np.array([1]))
    with pytest.raises(CompressorError, match="window_bits must be in 8..16"):
        NeuralCompressor(model=counts, window_bits=20)
    with pytest.raises(CompressorError, match="precision"):
        NeuralCompressor(model=counts, precision="float16")
    with pytest.raises(CompressorError, match=str(tmp_path / "missing")):
        compress.build(f"neural:model={tmp_path / 'missing'}")
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "model.json").write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "not-a-model" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(CompressorError, match="not-a-model"):
        compress.build(f"neural:model={tmp_path / 'not-a-model'}")


# -- saving and loading -----------------------------------------------------------------------------


def test_saved_compressor_reloads_from_the_shard_directory(transformer_dir, tmp_path):
    c = compress.build(f"neural:model={transformer_dir},window_bits=12,reset=false,context_bytes=8")
    config = c.save(tmp_path / "shards")
    assert config["model"] == "neural-model" and config["window_bits"] == 12 and config["reset"] is False
    config = json.loads(json.dumps(config))  # as stored in a manifest
    reloaded = compress.load(config, tmp_path / "shards")
    doc = CODE[2][:250]
    symbols, side = c.encode_with_side(doc)
    assert np.array_equal(reloaded.encode(doc), symbols)
    assert reloaded.decode(symbols, side) == doc
    weights = tmp_path / "shards" / "neural-model" / "model.safetensors"
    weights.write_bytes(Path(transformer_dir / "model.safetensors").read_bytes()[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(CompressorError, match="not the ones"):
        compress.load(config, tmp_path / "shards")


def test_a_run_directory_means_its_latest_checkpoint(transformer_dir, tmp_path):
    for step in (10, 20):
        checkpoint = tmp_path / "run" / "checkpoints" / f"step-{step:08d}"
        checkpoint.mkdir(parents=True)
        for name in ("model.json", "model.safetensors"):
            (checkpoint / name).write_bytes((transformer_dir / name).read_bytes())
    latest = tmp_path / "run" / "checkpoints" / "step-00000020"
    assert resolve_model_dir(tmp_path / "run") == latest
    assert resolve_model_dir(tmp_path / "run" / "checkpoints") == latest
    assert compress.build(f"neural:model={tmp_path / 'run'}").config()["model"] == str(latest)


def test_training_chunks_tile_the_document_at_character_boundaries():
    doc = ("naïve café – " * 40).encode("utf-8") + CODE[0][:500]
    chunks = training_chunks(doc, np.random.default_rng(0), shortest=5, longest=20)
    assert b"".join(chunks) == doc
    assert all(5 <= len(c) <= 23 for c in chunks[:-1])
    for chunk in chunks:
        chunk.decode("utf-8")  # no multi-byte character is cut


# -- collisions -------------------------------------------------------------------------------------


def test_collision_analysis_finds_chunks_that_share_a_symbol(counts):
    c = NeuralCompressor(model=counts)
    stats = window_collisions(c, CODE + TRAIN[:2])
    assert stats.windows >= stats.chunks >= stats.symbols > 0
    assert stats.colliding_symbols > 0 and 0 < stats.colliding_window_share < 1
    assert stats.chunks_per_colliding_symbol >= 2 and 0 <= stats.common_prefix_share <= 1
    for example in stats.examples[:2]:  # each chunk, coded alone, is one window with that symbol
        chunks = [ast.literal_eval(text) for text in example["chunks"]]
        for chunk in chunks:
            symbols, side = c.encode_with_side(chunk)
            assert symbols.tolist() == example["symbol"] and side.tolist() == [len(chunk)]
