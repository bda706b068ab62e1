"""Compressors: exact round trips, saved configs, clear errors on bad specs and bad streams."""

from __future__ import annotations

import gzip
import json
import pickle
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxylm import compress
from proxylm.compress import CompressorError
from proxylm.compress.bpe_bytes import TokenOrder
from proxylm.vocab import id_dtype

STDLIB = Path(sysconfig.get_paths()["stdlib"])
LOSSLESS = ["raw", "gzip", "bpe", "bpe-bytes", "bpe-bytes:order=gray", "doublebyte", "halfbyte", "doublebit", "bit"]
TRAINABLE = {"bpe", "bpe-bytes"}


def stdlib_sources(package: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((STDLIB / package).glob("*.py"))]


@pytest.fixture(scope="module")
def train_docs() -> list[bytes]:
    return stdlib_sources("json") + stdlib_sources("importlib")


@pytest.fixture(scope="module")
def compressors(train_docs) -> dict[str, compress.Compressor]:
    built = {}
    for spec in LOSSLESS:
        c = compress.build(spec, vocab=512) if spec.split(":")[0] in TRAINABLE else compress.build(spec)
        if c.trainable:
            c.fit(train_docs)
        built[spec] = c
    return built


def roundtrip(c: compress.Compressor, data: bytes) -> np.ndarray:
    symbols = c.encode(data)
    assert symbols.ndim == 1
    assert symbols.dtype == id_dtype(c.alphabet_size)
    assert symbols.size == 0 or int(symbols.max()) < c.alphabet_size
    assert c.decode(symbols) == data
    return symbols


# ---- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", LOSSLESS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300))
def test_every_compressor_roundtrips_arbitrary_bytes(compressors, spec, data):
    roundtrip(compressors[spec], data)


@pytest.mark.parametrize("spec", LOSSLESS)
@settings(max_examples=30, deadline=None)
@given(text=st.text(max_size=200))
def test_every_compressor_roundtrips_unicode_text(compressors, spec, text):
    roundtrip(compressors[spec], text.encode("utf-8"))


EDGE_CASES = {
    "empty": b"",
    "one byte": b"x",
    "nuls": b"\x00" * 17 + b"a\x00b",
    "invalid utf8": b"\xff\xfe\xc3(\xa0\xa1\xe2\x28\xa1\xf0\x90\x28\xbc\x80",
    "lone surrogate bytes": "x\ud800y".encode("utf-8", "surrogatepass"),
    "all bytes": bytes(range(256)) * 2,
    "ends in ff ff": b"ab\xff\xff",
    "odd ends in ff": b"abc\xff",
    "whitespace runs": b"    \t\t\r\n\r\n   \n" * 5,
}


@pytest.mark.parametrize("spec", LOSSLESS)
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_roundtrip(compressors, spec, case):
    roundtrip(compressors[spec], EDGE_CASES[case])


@pytest.mark.parametrize("spec", LOSSLESS)
def test_megabyte_of_random_bytes_roundtrips(compressors, spec):
    data = np.random.default_rng(0).integers(0, 256, size=1 << 20, dtype=np.uint8).tobytes()
    roundtrip(compressors[spec], data)


@pytest.mark.parametrize("spec", LOSSLESS)
def test_source_code_roundtrips_and_encode_many_matches_encode(compressors, spec):
    c = compressors[spec]
    docs = stdlib_sources("email")[:8]  # not in the training documents
    many = c.encode_many(docs)
    assert len(many) == len(docs)
    for doc, symbols in zip(docs, many):
        np.testing.assert_array_equal(symbols, c.encode(doc))
        assert c.decode(symbols) == doc


@pytest.mark.parametrize("spec", LOSSLESS)
def test_decode_accepts_plain_lists(compressors, spec):
    c = compressors[spec]
    data = b"def f(x):\n    return x + 1\n"
    assert c.decode(c.encode(data).tolist()) == data


# ---- configs, files, pickling ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", LOSSLESS)
def test_saved_config_reloads_an_identical_compressor(compressors, spec, tmp_path):
    c = compressors[spec]
    config = c.save(tmp_path)
    assert config["name"] == spec.split(":")[0]
    again = compress.load(config, tmp_path)
    assert again.alphabet_size == c.alphabet_size
    assert again.config() == config
    for doc in stdlib_sources("email")[:3] + [bytes(range(256))]:
        np.testing.assert_array_equal(again.encode(doc), c.encode(doc))


@pytest.mark.parametrize("spec", LOSSLESS)
def test_pickled_compressor_encodes_the_same(compressors, spec):
    c = compressors[spec]
    doc = stdlib_sources("email")[0]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(c)).encode(doc), c.encode(doc))


def test_split_specs_keeps_parameters_with_their_spec():
    assert compress.split_specs("bpe:vocab=512,min_frequency=2,gzip") == ["bpe:vocab=512,min_frequency=2", "gzip"]
    assert compress.split_specs("raw, bpe-bytes:vocab=8192,order=gray ,halfbyte,") == [
        "raw",
        "bpe-bytes:vocab=8192,order=gray",
        "halfbyte",
    ]
    assert compress.split_specs("bpe:path=/data/tokenizer.json,gzip:level=3") == ["bpe:path=/data/tokenizer.json", "gzip:level=3"]


def test_config_params_rebuild_untrained_compressors():
    for spec in ["gzip:level=3", "bpe:vocab=1000,min_frequency=5", "bpe-bytes:vocab=700,order=gray"]:
        c = compress.build(spec)
        assert compress.load(c.config(), ".").config() == c.config()
    assert compress.build("gzip:level=3").config() == {"name": "gzip", "level": 3}


def test_bpe_loads_a_saved_tokenizer_from_path(compressors, tmp_path):
    bpe = compressors["bpe"]
    bpe.save(tmp_path)
    loaded = compress.build(f"bpe:path={tmp_path / 'tokenizer.json'}")
    assert loaded.ready and loaded.alphabet_size == bpe.alphabet_size
    doc = stdlib_sources("email")[1]
    np.testing.assert_array_equal(loaded.encode(doc), bpe.encode(doc))
    gray = compress.build(f"bpe-bytes:path={tmp_path / 'tokenizer.json'},order=gray")
    np.testing.assert_array_equal(gray.encode(doc), compressors["bpe-bytes:order=gray"].encode(doc))


# ---- behaviour of each compressor ----------------------------------------------------------------


def test_raw_is_the_identity():
    c = compress.build("raw")
    np.testing.assert_array_equal(c.encode(b"\x00A\xff"), [0, 65, 255])


def test_gzip_is_deterministic_standard_gzip():
    c = compress.build("gzip")
    data = b"hello hello hello hello\n" * 50
    first, second = c.encode(data), c.encode(data)
    np.testing.assert_array_equal(first, second)
    assert first[4:8].tolist() == [0, 0, 0, 0]  # mtime field
    assert gzip.decompress(first.tobytes()) == data
    assert len(first) < len(data) / 10
    assert len(compress.build("gzip:level=1").encode(data)) >= len(first)


def test_sub_byte_symbols_are_most_significant_first():
    np.testing.assert_array_equal(compress.build("halfbyte").encode(b"\xab\x01"), [0xA, 0xB, 0x0, 0x1])
    np.testing.assert_array_equal(compress.build("doublebit").encode(b"\xb4"), [2, 3, 1, 0])
    np.testing.assert_array_equal(compress.build("bit").encode(b"\x81"), [1, 0, 0, 0, 0, 0, 0, 1])


def test_doublebyte_pairs_and_odd_length_flag():
    c = compress.build("doublebyte")
    np.testing.assert_array_equal(c.encode(b"\x01\x02\x03\x04"), [0x0102, 0x0304])
    np.testing.assert_array_equal(c.encode(b"\x01\x02\x03"), [0x0102, 0x0300, 0xFFFF])
    np.testing.assert_array_equal(c.encode(b"\x01\x02\xff\xff"), [0x0102, 0xFFFF, 0xFFFF])
    np.testing.assert_array_equal(c.encode(b"\xff"), [0xFF00, 0xFFFF])


@pytest.mark.parametrize("spec", ["bpe", "bpe-bytes"])
def test_bpe_fits_a_small_vocab_and_roundtrips(spec, train_docs):
    c = compress.build(f"{spec}:vocab=300")
    assert not c.ready
    c.fit(train_docs)
    assert c.ready
    bpe = c if spec == "bpe" else c.bpe
    assert bpe.alphabet_size == 300
    for doc in stdlib_sources("email")[:4] + [b"\xff\x00 caf\xc3\xa9"]:
        roundtrip(c, doc)


def test_bpe_token_ids_are_all_real_tokens(compressors):
    bpe = compressors["bpe"]
    pieces = bpe.token_bytes()
    assert len(pieces) == bpe.alphabet_size
    assert len(set(pieces)) == len(pieces)
    assert {p for p in pieces if len(p) == 1} == {bytes([b]) for b in range(256)}


def test_bpe_merges_stay_inside_pre_tokenizer_pieces(compressors):
    def is_letter(byte: int) -> bool:
        return byte >= 0x80 or bytes([byte]).isalpha()  # bytes >= 0x80 group as letters

    for piece in compressors["bpe"].token_bytes():
        # A word never merges with the punctuation, space or digit after it...
        assert all(is_letter(b) for a, b in zip(piece, piece[1:]) if is_letter(a)), piece
        # ...and numbers are split into runs of at most 3 digits, never glued to letters.
        if any(bytes([b]).isdigit() for b in piece):
            assert piece.isdigit() and len(piece) <= 3, piece


@pytest.fixture(scope="module")
def bpe_4096(train_docs) -> compress.Compressor:
    c = compress.build("bpe:vocab=4096")
    c.fit(train_docs + stdlib_sources("email"))
    return c


def test_bpe_compresses_held_out_python_source_over_3x(bpe_4096):
    c = bpe_4096
    held_out = stdlib_sources("logging") + stdlib_sources("concurrent/futures")
    raw = sum(len(d) for d in held_out)
    symbols = sum(len(s) for s in c.encode_many(held_out))
    assert raw / symbols > 3.0  # 3.39 on CPython 3.11's stdlib; the margin allows for other versions' sources


def test_bpe_bytes_width_and_gray_order(compressors):
    ids, gray = compressors["bpe-bytes"], compressors["bpe-bytes:order=gray"]
    assert ids.width == gray.width == 2
    assert ids.order is TokenOrder.ID and gray.order is TokenOrder.GRAY
    np.testing.assert_array_equal(ids.token_codes(), np.arange(ids.bpe.alphabet_size))
    pieces = gray.bpe.token_bytes()
    codes = gray.token_codes()[np.argsort(np.array(pieces, dtype=object), kind="stable")]
    flips = [bin(int(a) ^ int(b)).count("1") for a, b in zip(codes[:-1], codes[1:])]
    assert set(flips) == {1}
    assert len(set(codes.tolist())) == len(codes)


def test_bpe_bytes_writes_ids_big_endian(compressors):
    c = compressors["bpe-bytes"]
    doc = b"import os\n"
    ids = compressors["bpe"].encode(doc).astype(np.int64)
    np.testing.assert_array_equal(c.encode(doc).reshape(-1, 2), np.stack([ids >> 8, ids & 0xFF], axis=1))


# ---- the fast (tiktoken) encoder against HF's reference encoder --------------------------------


def test_bpe_fast_encoder_gives_the_reference_ids(compressors, bpe_4096):
    rng = np.random.default_rng(1)
    docs = (
        stdlib_sources("logging")
        + stdlib_sources("concurrent/futures")
        + list(EDGE_CASES.values())
        + [rng.integers(0, 256, size=1 << 16, dtype=np.uint8).tobytes(), "naïve café ✓ — ünïcode 日本語".encode() * 20]
    )
    for c in (compressors["bpe"], bpe_4096):
        assert c.fast
        for doc, symbols in zip(docs, c.encode_many(docs)):
            reference = c.reference_encode(doc)
            np.testing.assert_array_equal(symbols, reference)
            np.testing.assert_array_equal(c.encode(doc), reference)
            assert symbols.dtype == reference.dtype == np.uint16


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode)))
def test_bpe_fast_encoder_matches_the_reference_on_any_input(compressors, bpe_4096, data):
    for c in (compressors["bpe"], bpe_4096):
        np.testing.assert_array_equal(c.encode(data), c.reference_encode(data))


def test_bpe_keeps_the_reference_encoder_when_ids_are_not_in_merge_order(compressors, tmp_path):
    c = compressors["bpe"]
    c.save(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    first, second = (token for token, i in vocab.items() if i in (300, 301))
    vocab[first], vocab[second] = vocab[second], vocab[first]  # still a valid tokenizer, ids no longer merge ranks
    (tmp_path / "swapped.json").write_text(json.dumps(spec))
    swapped = compress.build(f"bpe:path={tmp_path / 'swapped.json'}")
    assert not swapped.fast
    for doc in stdlib_sources("email")[:3] + [EDGE_CASES["invalid utf8"]]:
        np.testing.assert_array_equal(roundtrip(swapped, doc), swapped.reference_encode(doc))
        np.testing.assert_array_equal(swapped.encode_many([doc])[0], swapped.reference_encode(doc))


# ---- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", LOSSLESS)
def test_out_of_range_symbols_raise_a_clear_error(compressors, spec):
    c = compressors[spec]
    good = c.encode(b"hello world, hello").astype(np.int64)
    for bad_value in (c.alphabet_size, -1):
        bad = good.copy()
        bad[1] = bad_value
        with pytest.raises(CompressorError, match=rf"symbol {bad_value} at position 1 is outside the alphabet"):
            c.decode(bad)
    with pytest.raises(CompressorError, match="1-D"):
        c.decode(good.reshape(1, -1))


@pytest.mark.parametrize(
    ("spec", "stream", "message"),
    [
        ("halfbyte", [1, 2, 3], "3 symbols is truncated.*multiple of 2"),
        ("doublebit", [1, 2, 3, 0, 1], "5 symbols is truncated.*multiple of 4"),
        ("bit", [1, 0, 1], "3 symbols is truncated.*multiple of 8"),
        ("doublebyte", [0xFFFF], "lone end flag"),
        ("doublebyte", [0x0102, 0x0304, 0xFFFF], "invalid stream: symbol 0x0304 before the end flag"),
        ("gzip", [], "empty stream"),
        ("bpe-bytes", [0, 97, 0], "3 bytes is truncated; tokens are 2 bytes each"),
        ("bpe-bytes", [0, 97, 0xFF, 0xFF], "code 65535 at token position 1 .* belongs to no token"),
    ],
)
def test_invalid_streams_raise_a_clear_error(compressors, spec, stream, message):
    with pytest.raises(CompressorError, match=message):
        compressors[spec].decode(np.array(stream, dtype=np.int64))


def test_truncated_or_corrupted_gzip_raises(compressors):
    c = compressors["gzip"]
    symbols = c.encode(b"some text that gzip will compress " * 20)
    for cut in (5, len(symbols) // 2, len(symbols) - 1):
        with pytest.raises(CompressorError, match="gzip: stream of .* bytes is (truncated|not valid)"):
            c.decode(symbols[:cut])
    corrupted = symbols.copy()
    corrupted[-6] ^= 0xFF  # inside the CRC
    with pytest.raises(CompressorError, match="not valid gzip data"):
        c.decode(corrupted)


def test_unknown_compressor_or_parameter_is_named():
    with pytest.raises(CompressorError, match="unknown compressor 'zstd'"):
        compress.build("zstd")
    with pytest.raises(CompressorError, match="gzip:speed=3.*'speed'"):
        compress.build("gzip:speed=3")
    with pytest.raises(CompressorError, match="'colour'"):
        compress.build("bpe:vocab=300,colour=red")
    with pytest.raises(CompressorError, match="'level'"):
        compress.build("halfbyte:level=1")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gzip:level=10", "gzip: level must be an integer in 0..9, got 10"),
        ("bpe:vocab=100", "bpe: vocab must be an integer >= 256, got 100"),
        ("bpe:min_frequency=-1", "min_frequency must be an integer >= 0"),
        ("bpe-bytes:order=random", "order must be one of id, gray, got 'random'"),
    ],
)
def test_bad_parameter_values_are_rejected(spec, message):
    with pytest.raises(CompressorError, match=message):
        compress.build(spec)


def test_untrained_bpe_says_what_to_do():
    with pytest.raises(CompressorError, match="not trained; fit it on documents or load one with path=FILE"):
        compress.build("bpe").encode(b"x")
    with pytest.raises(CompressorError, match="not trained"):
        compress.build("bpe-bytes").encode(b"x")


def test_bpe_rejects_missing_or_foreign_tokenizer_files(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(CompressorError, match=f"tokenizer file {missing} does not exist"):
        compress.build(f"bpe:path={missing}")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(CompressorError, match=f"cannot read tokenizer file {garbage}"):
        compress.build(f"bpe:path={garbage}")

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    foreign = Tokenizer(models.BPE())
    foreign.pre_tokenizer = pre_tokenizers.Whitespace()  # drops whitespace: could never round-trip
    foreign.train_from_iterator(["a b c"] * 5, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    foreign.save(str(tmp_path / "foreign.json"))
    with pytest.raises(CompressorError, match="foreign.json was not written by proxylm's bpe compressor"):
        compress.build(f"bpe:path={tmp_path / 'foreign.json'}")


def test_non_trainable_compressors_refuse_fit():
    with pytest.raises(CompressorError, match="'gzip' is not trainable"):
        compress.build("gzip").fit([b"x"])
