"""`prepare` and `Shards`: round trips, manifest, resume, atomicity under a kill, side info, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from proxylm import compress
from proxylm.cli import main as cli_main
from proxylm.compress.base import Compressor
from proxylm.config import ConfigError
from proxylm.data.corpus import CorpusError, open_corpus, split_of
from proxylm.data.prepare import prepare
from proxylm.data.shards import MANIFEST, Shards, ShardsError

SNIPPETS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n",
    "import os\nprint(os.getcwd())\n",
    "# naïve café ✓ — unicode survives\nname = 'ünïcode'\n",
    "for i in range(10):\n    if i % 2:\n        print(i)\n",
]


def make_jsonl(path: Path, n: int = 60) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            text = SNIPPETS[i % len(SNIPPETS)] + f"value_{i} = {i * 7}\n" * (1 + i % 4)
            fh.write(json.dumps({"text": text}) + "\n")
        fh.write("not json\n")
        fh.write(json.dumps({"text": ""}) + "\n")
    return path


@pytest.fixture
def corpus_path(tmp_path):
    return make_jsonl(tmp_path / "corpus.jsonl")


def all_docs(out: Path) -> dict[str, bytes]:
    docs = {}
    for split in ("train", "val"):
        shards = Shards.open(out, split)
        for i in range(len(shards)):
            docs[shards.doc_id(i)] = shards.raw(i).tobytes()
    return docs


@pytest.mark.parametrize("spec", ["raw", "gzip"])
def test_round_trip_raw_bytes_and_lossless_decode(tmp_path, corpus_path, spec):
    out = tmp_path / "out"
    manifest = prepare(corpus_path, spec, out, val_fraction=0.2, shard_docs=16)
    expected = {d.id: d.data for d in open_corpus(corpus_path)}
    assert all_docs(out) == expected
    for split in ("train", "val"):
        shards = Shards.open(out, split)
        compressor = shards.compressor()
        assert len(shards) == manifest["splits"][split]["documents"] > 0
        for i in range(len(shards)):
            assert split_of(shards.doc_id(i), 0.2).value == split
            assert shards.symbols(i).dtype == np.uint8
            assert shards.raw_length(i) == len(shards.raw(i))
            assert shards.symbols_length(i) == len(shards.symbols(i))
            assert compressor.decode(shards.symbols(i)) == shards.raw(i).tobytes()
            assert shards.side(i) is None


def test_manifest_fields(tmp_path, corpus_path):
    out = tmp_path / "out"
    manifest = prepare(corpus_path, "gzip", out, val_fraction=0.2, shard_docs=16)
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert manifest["compressor"]["spec"] == "gzip"
    assert manifest["compressor"]["config"]["name"] == "gzip"
    assert manifest["documents"] == 60
    assert manifest["raw_bytes"] == sum(len(d.data) for d in open_corpus(corpus_path))
    assert manifest["ratio"] == pytest.approx(manifest["raw_bytes"] / manifest["symbols"], rel=1e-3)
    assert manifest["skipped"]["not_json"] == 1 and manifest["skipped"]["empty"] == 1
    assert manifest["val_fraction"] == 0.2
    assert set(manifest["splits"]) == {"train", "val"}
    assert sum(s["documents"] for s in manifest["splits"].values()) == 60
    assert manifest["corpus"]["source"] == str(corpus_path)
    train = Shards.open(out, "train")
    assert train.alphabet_size == 256 and train.manifest == manifest
    assert len(manifest["splits"]["train"]["shards"]) == -(-manifest["splits"]["train"]["documents"] // 16)


def test_workers_give_the_same_shards_as_one_process(tmp_path, corpus_path):
    one = prepare(corpus_path, "gzip", tmp_path / "one", shard_docs=16)
    two = prepare(corpus_path, "gzip", tmp_path / "two", shard_docs=16, workers=2)
    assert one["splits"] == two["splits"]  # same documents, bytes, symbols and content hashes per shard
    a, b = Shards.open(tmp_path / "one"), Shards.open(tmp_path / "two")
    assert all(np.array_equal(a.symbols(i), b.symbols(i)) for i in range(len(a)))


def test_bpe_is_fitted_on_train_only_saved_and_reloaded(tmp_path, corpus_path):
    out = tmp_path / "bpe"
    manifest = prepare(corpus_path, "bpe:vocab=300", out, val_fraction=0.2)
    fit = manifest["compressor"]["fit"]
    assert fit["documents"] == manifest["splits"]["train"]["documents"]  # the whole train split fits the budget
    assert fit["bytes"] == manifest["splits"]["train"]["raw_bytes"]
    shards = Shards.open(out, "val")
    compressor = shards.compressor()
    assert compressor.alphabet_size == manifest["compressor"]["alphabet_size"] <= 300
    assert shards.symbols(0).dtype == np.uint16
    assert all(compressor.decode(shards.symbols(i)) == shards.raw(i).tobytes() for i in range(len(shards)))
    assert manifest["ratio"] > 1.2


def test_rerun_reuses_shards_and_a_fitted_compressor(tmp_path, corpus_path):
    out = tmp_path / "out"
    first = prepare(corpus_path, "bpe:vocab=300", out, shard_docs=16)
    shard_files = sorted(out.glob("*/shard-*/sym.bin"))
    mtimes = [p.stat().st_mtime_ns for p in shard_files]
    tokenizer_mtime = (out / "tokenizer.json").stat().st_mtime_ns
    second = prepare(corpus_path, "bpe:vocab=300", out, shard_docs=16)
    assert second["run"]["shards_written"] == 0
    assert second["run"]["shards_reused"] == first["run"]["shards_written"] == len(shard_files)
    assert [p.stat().st_mtime_ns for p in shard_files] == mtimes
    assert (out / "tokenizer.json").stat().st_mtime_ns == tokenizer_mtime
    assert second["splits"] == first["splits"]


def test_rerun_rewrites_only_the_shards_whose_documents_changed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"m{i:02d}.py").write_text(f"x_{i} = {i}\n")
    out = tmp_path / "out"
    prepare(src, "gzip", out, shard_docs=8, val_fraction=0.0)
    (src / "m39.py").write_text("x_39 = 'changed'\n")  # the last file: only the last shard changes
    manifest = prepare(src, "gzip", out, shard_docs=8, val_fraction=0.0)
    assert (manifest["run"]["shards_written"], manifest["run"]["shards_reused"]) == (1, 4)
    assert all_docs(out)["m39.py"] == b"x_39 = 'changed'\n"


def test_changed_options_rewrite_everything_and_drop_stale_shards(tmp_path, corpus_path):
    out = tmp_path / "out"
    prepare(corpus_path, "gzip", out, shard_docs=8)
    manifest = prepare(corpus_path, "gzip:level=1", out, shard_docs=32)
    assert manifest["run"]["shards_reused"] == 0
    on_disk = sorted(p.name for p in (out / "train").iterdir())
    assert on_disk == [s["name"] for s in manifest["splits"]["train"]["shards"]]
    assert all_docs(out) == {d.id: d.data for d in open_corpus(corpus_path)}


# ---- a prepare killed mid-way never loads ------------------------------------------------------

KILL_SCRIPT = """
import os, sys
from proxylm.data import shards, prepare as prep
finish = shards.ShardWriter.finish
count = [0]
def finish_then_die(self):
    count[0] += 1
    if count[0] == int(sys.argv[4]):
        os._exit(9)  # killed while this shard is still a temporary directory
    return finish(self)
shards.ShardWriter.finish = finish_then_die
prep.prepare(sys.argv[1], sys.argv[2], sys.argv[3], shard_docs=int(sys.argv[5]))
"""


def run_killed(corpus: Path, spec: str, out: Path, die_at_shard: int, shard_docs: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(corpus), spec, str(out), str(die_at_shard), str(shard_docs)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 9, result.stderr


def test_killed_prepare_does_not_load_and_resumes(tmp_path, corpus_path):
    out = tmp_path / "out"
    run_killed(corpus_path, "gzip", out, die_at_shard=2, shard_docs=16)
    assert any(p.name.startswith(".tmp-") for p in (out / "train").iterdir())  # a half shard was left behind
    with pytest.raises(ShardsError, match=rf"{out}: no complete manifest\.json"):
        Shards.open(out)
    manifest = prepare(corpus_path, "gzip", out, shard_docs=16)
    assert manifest["run"]["shards_reused"] == 1  # the shard finished before the kill
    assert not any(p.name.startswith(".tmp-") for p in out.glob("*/*"))
    assert all_docs(out) == {d.id: d.data for d in open_corpus(corpus_path)}


def test_killed_rerun_with_other_options_does_not_load_mixed_shards(tmp_path, corpus_path):
    out = tmp_path / "out"
    prepare(corpus_path, "gzip", out, shard_docs=16)
    assert len(Shards.open(out)) > 0
    run_killed(corpus_path, "gzip:level=1", out, die_at_shard=2, shard_docs=16)
    with pytest.raises(ShardsError, match="no complete manifest"):
        Shards.open(out)


def test_open_refuses_missing_incomplete_or_tampered_directories(tmp_path, corpus_path):
    with pytest.raises(ShardsError, match="shard directory not found"):
        Shards.open(tmp_path / "nowhere")
    out = tmp_path / "out"
    prepare(corpus_path, "raw", out, shard_docs=16)
    with pytest.raises(ShardsError, match="no split 'test'"):
        Shards.open(out, "test")
    meta_path = out / "train" / "shard-00001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"content": "0" * 32}))
    with pytest.raises(ShardsError, match="shard-00001: does not match the manifest"):
        Shards.open(out)
    (out / MANIFEST).write_text((out / MANIFEST).read_text()[:100])  # a torn manifest
    with pytest.raises(ShardsError, match="no complete manifest"):
        Shards.open(out)


def test_empty_corpus_is_an_error_and_writes_no_manifest(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("nope\n" + json.dumps({"text": " "}) + "\n")
    with pytest.raises(CorpusError, match=r"no usable documents \(skipped: not_json 1, empty 1\)"):
        prepare(path, "raw", tmp_path / "out")
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_limit_and_size_cap(tmp_path, corpus_path):
    manifest = prepare(corpus_path, "raw", tmp_path / "out", limit=10, max_doc_bytes=80)
    assert manifest["documents"] == 10
    assert manifest["skipped"]["too_large"] > 0
    assert all(len(d) <= 80 for d in all_docs(tmp_path / "out").values())


# ---- side information --------------------------------------------------------------------------


class SideCompressor(Compressor):
    """Test double for the neural proxy: symbols plus per-window byte counts as side information."""

    name = "side-test"

    @property
    def alphabet_size(self) -> int:
        return 70000  # > 65536: symbols need uint32

    def encode(self, data: bytes) -> np.ndarray:
        return self.encode_with_side(data)[0]

    def encode_with_side(self, data: bytes):
        windows = [data[i : i + 3] for i in range(0, len(data), 3)]
        symbols = np.array([int.from_bytes(w, "big") % 70000 for w in windows], dtype=np.uint32)
        return symbols, np.array([len(w) for w in windows], dtype=np.uint16)

    def decode(self, symbols, side=None) -> bytes:
        raise NotImplementedError


class BatchedSideCompressor(SideCompressor):
    """The same, with a batched entry point that prepare should prefer."""

    name = "batched-side-test"
    batches: list[int] = []

    def encode_many_with_side(self, docs):
        BatchedSideCompressor.batches.append(len(docs))
        return [self.encode_with_side(d) for d in docs]


@pytest.mark.parametrize("name", ["side-test", "batched-side-test"])
def test_side_information_is_kept(tmp_path, corpus_path, monkeypatch, name):
    monkeypatch.setitem(compress.REGISTRY, "side-test", f"{__name__}:SideCompressor")
    monkeypatch.setitem(compress.REGISTRY, "batched-side-test", f"{__name__}:BatchedSideCompressor")
    BatchedSideCompressor.batches = []
    out = tmp_path / "out"
    manifest = prepare(corpus_path, name, out)
    if name == "batched-side-test":
        assert sum(BatchedSideCompressor.batches) == 60 and len(BatchedSideCompressor.batches) <= 2
    assert manifest["compressor"]["side_dtype"] == "uint16"
    shards = Shards.open(out)
    for i in range(len(shards)):
        symbols, side = SideCompressor().encode_with_side(shards.raw(i).tobytes())
        assert shards.symbols(i).dtype == np.uint32
        assert np.array_equal(shards.symbols(i), symbols)
        assert np.array_equal(shards.side(i), side) and int(shards.side(i).sum()) == shards.raw_length(i)


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_prepare_prints_a_summary(tmp_path, corpus_path, capsys):
    assert cli_main(["prepare", "--corpus", str(corpus_path), "--compressor", "gzip", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "documents 60" in out and "skipped not_json 1, empty 1" in out and "MB/s" in out


def test_cli_missing_corpus_exits_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    assert cli_main(["prepare", "--corpus", str(missing), "--compressor", "gzip", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"proxylm: error: corpus not found: '{missing}' is not a file, a directory, a glob or `stdlib`"
    assert not (tmp_path / "o").exists()


def test_cli_strict_names_file_and_line(tmp_path, corpus_path, capsys):
    code = cli_main(["prepare", "--corpus", str(corpus_path), "--compressor", "raw", "--out", str(tmp_path / "o"), "--strict"])
    assert code == 2
    assert f"{corpus_path}:61: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o" / MANIFEST).exists()


def test_cli_bad_compressor_spec(tmp_path, corpus_path, capsys):
    assert cli_main(["prepare", "--corpus", str(corpus_path), "--compressor", "zip", "--out", str(tmp_path / "o")]) == 2
    assert "unknown compressor 'zip'" in capsys.readouterr().err


def test_options_are_validated_with_clear_messages(tmp_path, corpus_path):
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        prepare(corpus_path, "raw", tmp_path / "o", workers=0)
    with pytest.raises(ConfigError, match=r"val_fraction must be in \[0, 1\)"):
        prepare(corpus_path, "raw", tmp_path / "o", val_fraction=1.0)


def test_shards_pickle_without_copying_the_data(tmp_path, corpus_path):
    import pickle

    prepare(corpus_path, "raw", tmp_path / "o")
    shards = Shards.open(tmp_path / "o")
    first = shards.raw(0).tobytes()  # opens (memory-maps) the first shard
    blob = pickle.dumps(shards)
    assert len(blob) < 20_000
    clone = pickle.loads(blob)
    assert len(clone) == len(shards) and clone.raw(0).tobytes() == first


# ---- reading many shards: memory, open files, older layouts -------------------------------------

DOCS_PER_SHARD, SHARD_COUNT = 1500, 16


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many")
    lines = (json.dumps({"text": f"document {i}\n"}) + "\n" for i in range(DOCS_PER_SHARD * SHARD_COUNT))
    (root / "corpus.jsonl").write_text("".join(lines))
    prepare(root / "corpus.jsonl", "raw", root / "out", shard_docs=DOCS_PER_SHARD, val_fraction=0.0)
    return root / "out"


def touch_one_document_per_shard(shards: Shards) -> list[np.ndarray]:
    views = []
    for k in range(SHARD_COUNT):
        i = k * DOCS_PER_SHARD + DOCS_PER_SHARD // 2
        assert shards.doc_id(i) == f"corpus.jsonl:{i + 1}"
        assert shards.raw(i).tobytes() == f"document {i}\n".encode()
        assert shards.symbols_length(i) == shards.raw_length(i)
        views.append(shards.raw(i))
    return views


def test_reading_every_shard_keeps_memory_independent_of_the_document_count(many_shards):
    import tracemalloc

    shards = Shards.open(many_shards)
    assert len(shards.manifest["splits"]["train"]["shards"]) == SHARD_COUNT
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        touch_one_document_per_shard(shards)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Loading a shard's offsets (2 x 8 bytes) and ids (a str each) would take ~115 bytes per
    # document, 170 KB a shard here; mapped, an open shard costs a few KB of Python objects.
    assert grown < SHARD_COUNT * 24_000, f"{grown / SHARD_COUNT:.0f} bytes per open shard"


def test_open_shards_are_capped_and_handed_out_views_stay_valid(many_shards):
    import psutil

    process = psutil.Process()
    shards = Shards.open(many_shards)
    assert shards.max_open_shards >= 16
    shards.max_open_shards = 3
    before = process.num_fds()
    views = touch_one_document_per_shard(shards)
    assert process.num_fds() - before <= 3 * 6 + len(views)  # a view keeps its own shard's map open
    del views
    touch_one_document_per_shard(shards)  # evicted shards reopen
    assert process.num_fds() - before <= 3 * 6
    first = shards.raw(0)
    touch_one_document_per_shard(shards)  # shard 0 is evicted while `first` still points into it
    assert first.tobytes() == b"document 0\n"


def test_shards_written_with_ids_json_still_load(tmp_path, corpus_path):
    out = tmp_path / "out"
    prepare(corpus_path, "raw", out, shard_docs=16)
    expected = all_docs(out)
    for shard in (out / "train").glob("shard-*"):  # the layout before ids.bin
        offsets = np.load(shard / "ids.idx.npy")
        data = (shard / "ids.bin").read_bytes()
        ids = [data[a:b].decode() for a, b in zip(offsets[:-1], offsets[1:])]
        (shard / "ids.json").write_text(json.dumps(ids))
        (shard / "ids.bin").unlink()
        (shard / "ids.idx.npy").unlink()
    assert all_docs(out) == expected
    missing = out / "train" / "shard-00000"
    (missing / "ids.json").unlink()
    with pytest.raises(ShardsError, match=rf"{missing}: cannot read the document ids"):
        Shards.open(out).doc_id(0)


def test_damaged_shard_files_are_named(tmp_path, corpus_path):
    out = tmp_path / "out"
    prepare(corpus_path, "raw", out, shard_docs=16, val_fraction=0.0)
    shard = out / "train" / "shard-00001"
    raw = (shard / "raw.bin").read_bytes()
    (shard / "raw.bin").write_bytes(raw[:-3])
    shards = Shards.open(out)
    shards.raw(0)  # other shards still read
    with pytest.raises(ShardsError, match=rf"{shard / 'raw.bin'}: {len(raw) - 3} bytes on disk, the index expects {len(raw)}"):
        shards.raw(16)
    np.save(shard / "raw.idx.npy", np.zeros(5, dtype=np.int64))
    with pytest.raises(ShardsError, match=rf"{shard / 'raw.idx.npy'}: 5 offsets, the shard's meta says 16 documents"):
        Shards.open(out).raw(16)


def test_long_documents_become_pieces_that_share_their_documents_split(tmp_path):
    lines = "".join(f"row_{i} = {i}  # a line of a long module\n" for i in range(120))
    path = tmp_path / "long.jsonl"
    with open(path, "w") as fh:
        for i in range(40):
            fh.write(json.dumps({"id": f"doc{i}", "text": lines if i % 4 == 0 else f"x = {i}\n"}) + "\n")
    manifest = prepare(path, "raw", tmp_path / "out", val_fraction=0.3, max_piece_bytes=512)
    long_docs = 10
    pieces_per_long = -(-len(lines) // 512)
    assert manifest["documents"] == 40 and manifest["max_piece_bytes"] == 512
    assert manifest["pieces"] == 30 + long_docs * pieces_per_long
    assert sum(s["pieces"] for s in manifest["splits"].values()) == manifest["pieces"]
    stored = {}
    for split in ("train", "val"):
        shards = Shards.open(tmp_path / "out", split)
        assert manifest["splits"][split]["pieces"] == len(shards)
        for i in range(len(shards)):
            key, data = shards.doc_id(i), shards.raw(i).tobytes()
            assert len(data) <= 512
            doc = key.split("@")[0]
            assert split_of(doc, 0.3).value == split  # every piece on its document's side
            stored[key] = data
    for i in range(0, 40, 4):  # the pieces of a document, in order, give it back
        keys = sorted((k for k in stored if k.startswith(f"doc{i}@")), key=lambda k: int(k.split("@")[1]))
        assert len(keys) == pieces_per_long and "".join(stored[k].decode() for k in keys) == lines


def test_a_config_asking_for_other_pieces_than_the_shards_hold_is_refused(tmp_path, corpus_path):
    from proxylm.errors import UserError
    from proxylm.train.config import DataConfig
    from proxylm.train.trainer import check_pieces

    prepare(corpus_path, "raw", tmp_path / "out", max_piece_bytes=256)
    shards = Shards.open(tmp_path / "out")
    check_pieces(DataConfig(shards=str(tmp_path / "out"), max_piece_bytes=256), shards)
    with pytest.raises(UserError, match="max_piece_bytes is 512 .* pieces of 256 bytes"):
        check_pieces(DataConfig(shards=str(tmp_path / "out"), max_piece_bytes=512), shards)
