import dataclasses
import io
import tracemalloc

import numpy as np
import pytest
import torch

from proxylm import vocab
from proxylm.data.loader import Loader, LoaderStateError, permuted
from proxylm.data.mixer import MixConfig, Mode, stream_key
from proxylm.data.packer import PackConfig
from proxylm.data.schedule import PhaseConfig, Schedule, ScheduleConfig, constant, proxy_default
from proxylm.errors import UserError


class FakeShards:
    """The Shards interface over in-memory documents; symbols = bytes // 2."""

    def __init__(self, docs: list[bytes]):
        self.docs = [np.frombuffer(doc, dtype=np.uint8) for doc in docs]

    def __len__(self):
        return len(self.docs)

    def raw(self, i):
        return self.docs[i]

    def symbols(self, i):
        return (self.docs[i] // 2).astype(np.uint16)

    def raw_length(self, i):
        return len(self.docs[i])

    def symbols_length(self, i):
        return len(self.docs[i])


def corpus(n=60, seed=0):
    """Distinct documents of 1..40 bytes, each starting with its index."""
    rng = np.random.default_rng(seed)
    letters = [rng.integers(97, 123, rng.integers(0, 38), dtype=np.uint8).tobytes() for _ in range(n)]
    return FakeShards([b"%d:" % i + text for i, text in enumerate(letters)])


def make(shards, schedule=None, *, seed=0, drop=False, rank=0, world_size=1, seq_len=32, batch_size=2, pad_below=0,
         grad_accum=1):
    return Loader(
        shards,
        schedule or Schedule(proxy_default(), total_steps=20),
        MixConfig(seed=seed, drop_compressed=drop),
        PackConfig(seq_len=seq_len, batch_size=batch_size, pad_below=pad_below),
        n_main_heads=1,
        n_raw_heads=1,
        rank=rank,
        world_size=world_size,
        grad_accum=grad_accum,
    )


def views(batches, grad_accum=1):
    """(raw views as bytes, number of compressed views) read back from the rows: the batches of one
    micro-batch index hold the same global rows, and each row's batches tile that row's stream."""
    raw, compressed = [], 0
    for micro in range(grad_accum):
        mine = batches[micro::grad_accum]
        for b in range(mine[0].ids.shape[0]):
            stream = torch.cat([batch.ids[b] for batch in mine]).numpy()
            closes = np.flatnonzero(stream == vocab.RAW_CLOSE)
            for i in np.flatnonzero(stream == vocab.RAW_OPEN):
                k = np.searchsorted(closes, i)
                if k < len(closes) and vocab.is_byte_id(stream[i + 1 : closes[k]]).all():  # a whole raw view
                    raw.append(vocab.ids_to_bytes(stream[i + 1 : closes[k]]))
            compressed += int((stream == vocab.COMPRESSED_OPEN).sum())
    return raw, compressed


def assert_same(one, two):
    for field in dataclasses.fields(one):
        x, y = getattr(one, field.name), getattr(two, field.name)
        assert (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y), field.name


def through_torch_save(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("drop, rank, world_size, pad_below", [(False, 0, 1, 0), (True, 0, 1, 5), (False, 1, 2, 3)])
def test_resume_is_exact(drop, rank, world_size, pad_below):
    shards = corpus(10)  # small, so the run crosses several epochs and the schedule's phase change
    run = make(shards, drop=drop, rank=rank, world_size=world_size, pad_below=pad_below)
    batches = [run.next_batch(step) for step in range(20)]
    assert run.documents_drawn * world_size >= 2 * len(shards)  # several epochs
    for resume_after in (3, 11):
        first = make(shards, drop=drop, rank=rank, world_size=world_size, pad_below=pad_below)
        for step in range(resume_after + 1):
            first.next_batch(step)
        state = through_torch_save(first.state_dict())
        restored = make(shards, drop=drop, rank=rank, world_size=world_size, pad_below=pad_below)
        restored.load_state_dict(state)
        for step in range(resume_after + 1, 20):
            assert_same(restored.next_batch(step), batches[step])


def global_rows(shards, steps, *, batch_size, world_size, grad_accum, **kw):
    """Per step, the rows of every rank's micro-batches in global order: micro-batch a of rank r
    holds rows (a * W + r) * B ... (a * W + r) * B + B - 1."""
    loaders = [make(shards, rank=r, world_size=world_size, grad_accum=grad_accum, batch_size=batch_size, seq_len=16, **kw)
               for r in range(world_size)]
    out = []
    for step in range(steps):
        micro = [[loader.next_batch(step) for _ in range(grad_accum)] for loader in loaders]  # [rank][a]
        out.append(torch.cat([micro[r][a].ids for a in range(grad_accum) for r in range(world_size)]))
    return out


@pytest.mark.parametrize("drop", [False, True])
def test_the_global_stream_is_the_same_at_any_world_size_and_accumulation(drop):
    shards = corpus(50)
    reference = global_rows(shards, 12, batch_size=4, world_size=1, grad_accum=1, drop=drop)
    for batch_size, world_size, grad_accum in ((2, 2, 1), (2, 1, 2), (1, 2, 2), (1, 4, 1)):
        rows = global_rows(shards, 12, batch_size=batch_size, world_size=world_size, grad_accum=grad_accum, drop=drop)
        assert all(torch.equal(a, b) for a, b in zip(rows, reference)), (batch_size, world_size, grad_accum)


def test_every_epoch_visits_each_piece_once_and_epochs_reshuffle():
    loader = make(corpus(60), world_size=3)
    first, second = loader.draws(np.arange(60))[0].tolist(), loader.draws(np.arange(60, 120))[0].tolist()
    assert sorted(first) == sorted(second) == list(range(60)) and first != second


def test_a_long_document_fills_one_row_at_a_time_not_whole_batches():
    docs = [b"%d:" % i + b"short text" for i in range(3000)] + [b"LONG" * 375]  # an epoch is ~200 steps here
    loader = make(FakeShards(docs), Schedule(constant(Mode.SENTINEL, 0.0)), seq_len=32, batch_size=8)
    long_id = int(vocab.bytes_to_ids(np.frombuffer(b"L", dtype=np.uint8))[0])
    rows_with_it = []
    for step in range(400):
        batch = loader.next_batch(step)
        rows_with_it.append(int(((batch.ids == long_id).sum(dim=1) > 0).sum()))
        if sum(rows_with_it) >= 40:
            break
    assert sum(rows_with_it) >= 40 and max(rows_with_it) == 1  # read over 40+ steps, by one row of each batch
    assert len({tuple(row[:3].tolist()) for row in batch.ids}) == 8  # the rows start with different documents


def test_translation_pairs_that_fit_a_row_are_never_cut():
    from proxylm.data.audit import StreamAudit

    rng = np.random.default_rng(3)
    docs = [rng.integers(97, 123, int(n), dtype=np.uint8).tobytes() for n in rng.integers(1, 40, 300)]
    schedule = Schedule(constant(Mode.TRANSLATION, 0.9))
    loader = make(FakeShards(docs), schedule, seq_len=48, batch_size=4)
    audit = StreamAudit(seq_len=48)
    for step in range(150):
        audit.add(step, loader.next_batch(step))
    assert audit.pairs_whole > 50 and audit.pairs_cut == 0
    assert audit.padding_share() < 0.05
    assert loader.stats.pairs_cut == 0 and loader.stats.pairs_fitting >= audit.pairs_whole


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_drop_compressed_sees_the_raw_views_of_the_proxy_run(grad_accum):
    from collections import Counter

    shards = corpus(200)
    warmup = PhaseConfig(mode=Mode.PARALLEL, rate_start=0.2, rate_end=0.9, fraction=0.5)
    steady = PhaseConfig(mode=Mode.TRANSLATION, rate_start=0.9)
    steps = 30 // grad_accum
    schedule = Schedule(ScheduleConfig(phases=[warmup, steady]), total_steps=steps)
    proxy_loader = make(shards, schedule, seed=7, pad_below=4, grad_accum=grad_accum)
    proxy_batches = [proxy_loader.next_batch(step) for step in range(steps) for _ in range(grad_accum)]
    proxy_raw, proxy_compressed = views(proxy_batches, grad_accum)
    raw_only_loader = make(shards, schedule, seed=7, pad_below=4, drop=True, grad_accum=grad_accum)
    raw_only, missing = [], Counter(proxy_raw)
    while missing and len(raw_only) < 4 * steps * grad_accum:
        raw_only += [raw_only_loader.next_batch(len(raw_only) // grad_accum) for _ in range(grad_accum)]
        dropped_raw, dropped_compressed = views(raw_only, grad_accum)
        missing = Counter(proxy_raw) - Counter(dropped_raw)
    assert len(proxy_raw) >= 20 and not missing  # every raw view the proxy run saw is in the raw-only run ...
    assert len(raw_only) < steps * grad_accum  # ... for less compute
    assert dropped_compressed == 0 and proxy_compressed > 0


def test_views_share_through_the_loader():
    loader = make(corpus(200), Schedule(constant(Mode.SENTINEL, 0.7)), seq_len=64, batch_size=4)
    raw, compressed = views([loader.next_batch(step) for step in range(60)])
    assert abs(compressed / (compressed + len(raw)) - 0.7) < 0.06


class LazyShards:
    """A corpus of `n` documents made on demand: holds nothing per document."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def raw(self, i):
        return np.frombuffer(b"document %d" % i, dtype=np.uint8)

    def symbols(self, i):
        return self.raw(i) // 2

    def raw_length(self, i):
        return len(self.raw(i))

    def symbols_length(self, i):
        return len(self.raw(i))


def test_memory_does_not_grow_with_the_corpus():
    tracemalloc.start()
    loader = make(LazyShards(10**9), seq_len=256, batch_size=4, world_size=8, rank=5)
    for step in range(3):
        loader.next_batch(step)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * 2**20  # a permutation of 10**9 documents alone would need gigabytes
    state = through_torch_save(loader.state_dict())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    assert buffer.tell() < 2**17


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_document_order_is_a_permutation(n):
    order = permuted(np.arange(n), n, stream_key(0, 0, 1))
    assert sorted(order.tolist()) == list(range(n))
    if n >= 64:
        assert not np.array_equal(order, permuted(np.arange(n), n, stream_key(0, 1, 1)))


def test_state_from_another_setup_is_refused():
    shards = corpus(20)
    state = make(shards, rank=0, world_size=2).state_dict()
    with pytest.raises(LoaderStateError, match="saved with rank=0, this loader has rank=1"):
        make(shards, rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(LoaderStateError, match="seq_len=32, this loader has seq_len=64"):
        make(shards, seq_len=64).load_state_dict(make(shards).state_dict())


def test_user_errors():
    with pytest.raises(UserError, match="no documents"):
        make(FakeShards([]))
    with pytest.raises(UserError, match="rank 2 is outside a world of 2"):
        make(corpus(3), rank=2, world_size=2)
    with pytest.raises(UserError, match="every document would be dropped"):
        make(corpus(3), Schedule(constant(Mode.SENTINEL, 1.0)), drop=True).next_batch(0)
