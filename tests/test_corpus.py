"""Corpus readers: every format reads, bad input is skipped and counted (or raises with --strict),
splits are deterministic, samples are bounded."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from proxylm.data.corpus import (
    CorpusConfig,
    CorpusError,
    CorpusKind,
    Document,
    SkipReason,
    Split,
    cut_pieces,
    hash_unit,
    iter_split,
    open_corpus,
    sample_documents,
    split_of,
)
from proxylm.errors import UserError

TEXTS = ["def f():\n    return 1\n", "héllo wörld ✓\n", "print('x')\n"]


def write_jsonl(path: Path, lines: list[bytes | str]) -> Path:
    with open(path, "wb") as fh:
        for line in lines:
            fh.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def good_jsonl(path: Path) -> Path:
    return write_jsonl(path, [json.dumps({"text": t}) for t in TEXTS])


# ---- each format reads --------------------------------------------------------------------------


def test_jsonl_reads_documents_with_line_ids(tmp_path):
    corpus = open_corpus(good_jsonl(tmp_path / "a.jsonl"))
    docs = list(corpus)
    assert [d.data.decode() for d in docs] == TEXTS
    assert [d.id for d in docs] == ["a.jsonl:1", "a.jsonl:2", "a.jsonl:3"]
    assert corpus.source.kind is CorpusKind.JSONL
    assert sum(corpus.skipped_counts().values()) == 0


def test_jsonl_uses_record_id_and_configurable_field(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", [json.dumps({"content": "abc", "id": "doc-7"}), json.dumps({"content": "xyz"})])
    docs = list(open_corpus(path, field="content"))
    assert [(d.id, d.data) for d in docs] == [("doc-7", b"abc"), ("b.jsonl:2", b"xyz")]


def test_gzipped_jsonl_and_glob_over_several_files(tmp_path):
    good_jsonl(tmp_path / "part-0.jsonl")
    with gzip.open(tmp_path / "part-1.jsonl.gz", "wb") as fh:
        fh.write(json.dumps({"text": "zipped"}).encode() + b"\n")
    corpus = open_corpus(str(tmp_path / "part-*"))
    docs = list(corpus)
    assert corpus.source.kind is CorpusKind.JSONL
    assert [d.data.decode() for d in docs] == TEXTS + ["zipped"]
    assert docs[-1].id == "part-1.jsonl.gz:1"


def test_directory_of_source_files_skips_hidden_and_ids_are_relative(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("secret\n")
    (tmp_path / ".hidden.py").write_text("z = 3\n")
    docs = list(open_corpus(tmp_path))
    assert [(d.id, d.data) for d in docs] == [("b.py", b"y = 2\n"), ("pkg/a.py", b"x = 1\n")]


def test_glob_of_source_files_ids_relative_to_glob_root(tmp_path):
    (tmp_path / "src" / "m").mkdir(parents=True)
    (tmp_path / "src" / "m" / "a.py").write_text("a = 1\n")
    (tmp_path / "src" / "notes.txt").write_text("not code\n")
    docs = list(open_corpus(str(tmp_path / "src" / "**" / "*.py")))
    assert [d.id for d in docs] == ["m/a.py"]


def test_parquet_reads_by_batches_and_counts_nulls(tmp_path):
    texts = [f"document {i}\n" for i in range(600)] + [None]
    pq.write_table(pa.table({"text": texts}), tmp_path / "c.parquet", row_group_size=100)
    corpus = open_corpus(tmp_path / "c.parquet")
    docs = list(corpus)
    assert [d.data.decode() for d in docs] == texts[:-1]
    assert docs[5].id == "c.parquet#5"
    assert corpus.skipped[SkipReason.MISSING_FIELD] == 1


def test_parquet_missing_column_is_an_error_naming_the_column(tmp_path):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "d.parquet")
    with pytest.raises(CorpusError, match=r"no column 'text'.*body"):
        list(open_corpus(tmp_path / "d.parquet"))


def test_stdlib_corpus_is_real_python_and_records_the_version():
    corpus = open_corpus("stdlib", limit=5)
    docs = list(corpus)
    assert len(docs) == 5
    assert all(d.id.endswith(".py") for d in docs)
    info = corpus.describe()
    assert info["kind"] == "stdlib"
    assert info["python"] == sys.version.split()[0]
    assert not any("site-packages" in p.parts for p in corpus.source.files)


# ---- bad input: skipped and counted, or strict errors -----------------------------------------


def bad_jsonl(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "bad.jsonl",
        [
            json.dumps({"text": "good one"}),  # 1
            "{not json",  # 2 not_json
            "[1, 2]",  # 3 not_object
            json.dumps({"other": "x"}),  # 4 missing_field
            json.dumps({"text": 42}),  # 5 not_string
            b'{"text": "caf\xe9"}',  # 6 invalid_utf8 (Latin-1 byte in the line)
            '{"text": "lone \\ud800 surrogate"}',  # 7 invalid_utf8 (not encodable)
            json.dumps({"text": "   \n"}),  # 8 empty
            "",  # 9 blank line: empty
            json.dumps({"text": "x" * 100}),  # 10 too_large (cap below)
            json.dumps({"text": "good two"}),  # 11
        ],
    )


EXPECTED_BAD_COUNTS = {
    "not_json": 1,
    "not_object": 1,
    "missing_field": 1,
    "not_string": 1,
    "invalid_utf8": 2,
    "empty": 2,
    "too_large": 1,
    "unreadable": 0,
}


def test_every_bad_jsonl_kind_is_skipped_and_counted(tmp_path):
    corpus = open_corpus(bad_jsonl(tmp_path), max_doc_bytes=50)
    docs = list(corpus)
    assert [d.data for d in docs] == [b"good one", b"good two"]
    assert corpus.skipped_counts() == EXPECTED_BAD_COUNTS


@pytest.mark.parametrize(
    "line, reason", [(2, "not valid JSON"), (3, "not an object"), (4, "missing"), (5, "not a string"), (6, "UTF-8")]
)
def test_strict_raises_naming_file_and_line(tmp_path, line, reason):
    path = bad_jsonl(tmp_path)
    lines = path.read_bytes().split(b"\n")
    keep = [lines[0], lines[line - 1]]  # the good line, then only the bad one (now line 2)
    path.write_bytes(b"\n".join(keep) + b"\n")
    with pytest.raises(UserError, match=rf"{path}:2: .*{reason}"):
        list(open_corpus(path, strict=True))


def test_bad_source_files_are_skipped_and_counted(tmp_path):
    (tmp_path / "ok.py").write_text("ok = True\n")
    (tmp_path / "latin1.py").write_bytes(b"# line one\nname = 'caf\xe9'\n")
    (tmp_path / "empty.py").write_bytes(b"")
    (tmp_path / "blank.py").write_bytes(b"\n\n  \n")
    (tmp_path / "huge.py").write_bytes(b"x" * 200)
    corpus = open_corpus(tmp_path, max_doc_bytes=100)
    assert [d.id for d in corpus] == ["ok.py"]
    counts = corpus.skipped_counts()
    assert (counts["invalid_utf8"], counts["empty"], counts["too_large"]) == (1, 2, 1)


def test_strict_invalid_utf8_in_a_source_file_names_the_line(tmp_path):
    (tmp_path / "latin1.py").write_bytes(b"# line one\nname = 'caf\xe9'\n")
    with pytest.raises(CorpusError, match=r"latin1\.py:2: invalid UTF-8 \(byte 0xe9"):
        list(open_corpus(tmp_path, strict=True))


def test_counts_reset_on_each_pass(tmp_path):
    corpus = open_corpus(bad_jsonl(tmp_path), max_doc_bytes=50)
    list(corpus)
    list(corpus)
    assert corpus.skipped_counts() == EXPECTED_BAD_COUNTS


def test_missing_source_and_empty_glob_are_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match=r"corpus not found: '.*nothing-here\.jsonl'"):
        open_corpus(tmp_path / "nothing-here.jsonl")
    with pytest.raises(CorpusError, match=r"glob .* matched no files"):
        open_corpus(str(tmp_path / "*.jsonl"))


def test_config_validation():
    with pytest.raises(CorpusError, match="max_doc_bytes"):
        CorpusConfig(source="stdlib", max_doc_bytes=0)
    with pytest.raises(CorpusError, match="limit"):
        CorpusConfig(source="stdlib", limit=0)
    assert CorpusConfig(source="x", kind="jsonl").kind is CorpusKind.JSONL


# ---- splits and samples -----------------------------------------------------------------------


def test_split_is_deterministic_and_close_to_the_fraction():
    ids = [f"file-{i}.py" for i in range(20000)]
    first = [split_of(i, 0.05) for i in ids]
    assert first == [split_of(i, 0.05) for i in ids]
    share = first.count(Split.VAL) / len(ids)
    assert 0.04 < share < 0.06
    # a larger fraction only moves documents from train to val, never the other way
    assert all(split_of(i, 0.2) is Split.VAL for i, s in zip(ids, first) if s is Split.VAL)


def test_split_does_not_depend_on_the_process_hash_seed():
    ids = [f"doc-{i}" for i in range(200)]
    code = (
        "import json,sys; from proxylm.data.corpus import split_of;"
        "print(json.dumps([split_of(i, 0.3).value for i in json.loads(sys.argv[1])]))"
    )
    outputs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True, env=env, check=True)
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1] == [split_of(i, 0.3).value for i in ids]


def test_iter_split_partitions_the_corpus(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", [json.dumps({"text": f"doc {i}"}) for i in range(300)])
    corpus = open_corpus(path)
    train = {d.id for d in iter_split(corpus, Split.TRAIN, 0.2)}
    val = {d.id for d in iter_split(corpus, Split.VAL, 0.2)}
    assert not train & val
    assert train | val == {d.id for d in corpus}
    assert val


def test_sample_is_bounded_deterministic_and_a_prefix_of_the_hash_order(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [json.dumps({"text": "x" * (1 + i % 37)}) for i in range(500)])
    docs = list(open_corpus(path))
    sample = sample_documents(docs, salt="fit", max_bytes=2000)
    assert sum(len(d.data) for d in sample) <= 2000
    assert sample == sample_documents(reversed(docs), salt="fit", max_bytes=2000)
    ranked = sorted(docs, key=lambda d: hash_unit(d.id, "fit"))
    assert [d.id for d in sample] == [d.id for d in ranked[: len(sample)]]
    assert sum(len(d.data) for d in ranked[: len(sample) + 1]) > 2000  # the next one would not fit
    assert len(sample_documents(docs, salt="x", max_docs=7)) == 7
    assert sample_documents(docs, salt="a", max_docs=20) != sample_documents(docs, salt="b", max_docs=20)


# ---- pieces ----------------------------------------------------------------------------------


def test_pieces_tile_the_document_end_at_newlines_and_never_cut_a_character():
    text = ("def f():\n    return 'é'\n" * 40).encode() + "ü".encode() * 90
    pieces = cut_pieces(Document("a.py", text), 64)
    assert b"".join(p.data for p in pieces) == text
    assert all(len(p.data) <= 64 for p in pieces)
    assert [p.piece for p in pieces] == list(range(len(pieces)))
    assert {p.id for p in pieces} == {"a.py"} and pieces[3].key == "a.py@3"
    lines = [p for p in pieces if b"\n" in p.data[:-1] or p.data.endswith(b"\n")]
    assert all(p.data.endswith(b"\n") for p in lines[:-1])  # cut after a newline while one is in reach
    assert [p.data.decode("utf-8") for p in pieces]  # never inside a character


def test_pieces_are_near_equal_so_no_crumb_is_left_at_the_end():
    text = b"".join(b"line %04d of a long file\n" % i for i in range(200))  # 5,000 bytes
    sizes = [len(p.data) for p in cut_pieces(Document("b.py", text), 4096)]
    assert len(sizes) == 2 and min(sizes) > 2000  # two halves, not 4,096 + 904


def test_a_document_that_fits_stays_whole_with_its_own_id():
    doc = Document("c.py", b"x = 1\n")
    assert cut_pieces(doc, 64) == [doc] and doc.key == "c.py"
    long = Document("d.py", b"y = 2\n" * 100)
    assert cut_pieces(long, None) == [long]


def test_a_line_longer_than_the_cap_is_cut_inside_the_line():
    text = b"x" * 1000 + b"\n"
    pieces = cut_pieces(Document("e.py", text), 256)
    assert b"".join(p.data for p in pieces) == text and max(len(p.data) for p in pieces) <= 256
