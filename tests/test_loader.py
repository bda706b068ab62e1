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


def views(batches):
    """(raw views as bytes, number of compressed views) read back from the rows, which tile the stream."""
    stream = torch.cat([row for batch in batches for row in batch.ids]).numpy()
    opens, closes = np.flatnonzero(stream == vocab.RAW_OPEN), np.flatnonzero(stream == vocab.RAW_CLOSE)
    raw = [vocab.ids_to_bytes(stream[i + 1 : j]) for i, j in zip(opens, closes)]
    return raw, int((stream == vocab.COMPRESSED_OPEN).sum())


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
    assert run.epoch >= 2
    for resume_after in (3, 11):
        first = make(shards, drop=drop, rank=rank, world_size=world_size, pad_below=pad_below)
        for step in range(resume_after + 1):
            first.next_batch(step)
        state = through_torch_save(first.state_dict())
        restored = make(shards, drop=drop, rank=rank, world_size=world_size, pad_below=pad_below)
        restored.load_state_dict(state)
        for step in range(resume_after + 1, 20):
            assert_same(restored.next_batch(step), batches[step])


def test_ranks_read_disjoint_documents_and_epochs_reshuffle():
    shards = corpus(60)
    sentinel_raw = Schedule(constant(Mode.SENTINEL, 0.0))
    epochs = []  # epochs[rank] = [names in epoch 0, names in epoch 1]
    for rank in range(3):
        loader = make(shards, sentinel_raw, rank=rank, world_size=3, seq_len=16)
        batches = [loader.next_batch(0)]
        while len(views(batches)[0]) < 2 * loader.per_epoch:
            batches.append(loader.next_batch(len(batches)))
        names = [doc.split(b":")[0] for doc in views(batches)[0]]
        epochs.append([names[:20], names[20:40]])
    for epoch in range(2):
        shares = [set(epochs[rank][epoch]) for rank in range(3)]
        assert all(len(share) == 20 for share in shares)
        assert len(shares[0] | shares[1] | shares[2]) == 60  # disjoint, and together the whole corpus
    assert epochs[0][0] != epochs[0][1]


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_drop_compressed_sees_the_raw_views_of_the_proxy_run(grad_accum):
    shards = corpus(200)
    warmup = PhaseConfig(mode=Mode.PARALLEL, rate_start=0.2, rate_end=0.9, fraction=0.5)
    steady = PhaseConfig(mode=Mode.TRANSLATION, rate_start=0.9)
    steps = 30 // grad_accum
    schedule = Schedule(ScheduleConfig(phases=[warmup, steady]), total_steps=steps)
    proxy_loader = make(shards, schedule, seed=7, pad_below=4, grad_accum=grad_accum)
    proxy_batches = [proxy_loader.next_batch(step) for step in range(steps) for _ in range(grad_accum)]
    proxy_raw, proxy_compressed = views(proxy_batches)
    raw_only_loader = make(shards, schedule, seed=7, pad_below=4, drop=True, grad_accum=grad_accum)
    raw_only = [raw_only_loader.next_batch(0)]
    while raw_only_loader.schedule_step < steps:  # the step the proxy run is at when it draws the next document
        raw_only.append(raw_only_loader.next_batch(len(raw_only) // grad_accum))
    assert len(raw_only) < 30  # the same raw documents for less compute
    dropped_raw, dropped_compressed = views(raw_only)
    assert dropped_compressed == 0 and proxy_compressed > 0
    common = min(len(proxy_raw), len(dropped_raw)) - 1  # the last view of either may be cut by a batch end
    assert common >= 20
    assert dropped_raw[:common] == proxy_raw[:common]


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
    state = loader.state_dict()["packer"]
    assert sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor)) < 2**16


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
    with pytest.raises(UserError, match="fewer than the 4 ranks"):
        make(corpus(3), world_size=4)
    with pytest.raises(UserError, match="rank 2 is outside a world of 2"):
        make(corpus(3), rank=2, world_size=2)
    with pytest.raises(UserError, match="every document would be dropped"):
        make(corpus(3), Schedule(constant(Mode.SENTINEL, 1.0)), drop=True).next_batch(0)
