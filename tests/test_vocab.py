import numpy as np
import pytest

from proxylm import vocab


def test_layout_matches_design():
    assert (vocab.PAD, vocab.BOS, vocab.EOS) == (0, 1, 2)
    sentinels = [vocab.RAW_OPEN, vocab.RAW_CLOSE, vocab.COMPRESSED_OPEN, vocab.COMPRESSED_CLOSE]
    assert all(3 <= s < 64 for s in sentinels) and len(set(sentinels)) == 4
    assert vocab.BYTE_OFFSET == 64 and vocab.SYMBOL_OFFSET == 320
    assert vocab.vocab_size(0) == 320 and vocab.vocab_size(8192) == 320 + 8192


def test_bytes_round_trip_through_ids():
    data = bytes(range(256)) + b"\xff\xfe\x00"
    ids = vocab.bytes_to_ids(data)
    assert ids.min() >= 64 and ids.max() <= 319
    assert vocab.ids_to_bytes(ids) == data


def test_symbols_round_trip_through_ids():
    symbols = np.array([0, 1, 65535], dtype=np.uint16)
    ids = vocab.symbols_to_ids(symbols)
    assert ids.tolist() == [320, 321, 320 + 65535]
    assert vocab.ids_to_symbols(ids).tolist() == symbols.tolist()


def test_non_byte_ids_are_refused_by_name():
    with pytest.raises(ValueError, match="not a byte id"):
        vocab.ids_to_bytes([65, vocab.RAW_CLOSE])
    with pytest.raises(ValueError):
        vocab.ids_to_symbols([vocab.BOS])


def test_classifiers_partition_the_space():
    ids = np.arange(0, 400)
    kinds = vocab.is_special_id(ids).astype(int) + vocab.is_byte_id(ids) + vocab.is_symbol_id(ids)
    assert (kinds == 1).all()


@pytest.mark.parametrize("size,dtype", [(2, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32)])
def test_id_dtype_is_the_smallest_that_fits(size, dtype):
    assert vocab.id_dtype(size) == np.dtype(dtype)


def test_describe_names_specials_bytes_and_symbols():
    assert vocab.describe(vocab.RAW_OPEN) == "<raw>"
    assert vocab.describe(vocab.BYTE_OFFSET + ord("a")) == "a"
    assert vocab.describe(vocab.SYMBOL_OFFSET + 7) == "<s7>"
