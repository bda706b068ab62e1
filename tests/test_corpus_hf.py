"""`hf:PATH[:split]` corpora: local Hugging Face datasets (save_to_disk folders and folders of data
files), read offline with the same skip accounting and strict errors as the other readers."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from proxylm.data.corpus import CorpusError, CorpusKind, SkipReason, open_corpus, parse_hf_source

TEXTS = ["def f():\n    return 1\n", "héllo wörld ✓\n", "print('x')\n"]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No network and no cache outside the test's folder (datasets reads its config at import)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def save(tmp_path, name, columns):
    path = tmp_path / name
    datasets.Dataset.from_dict(columns).save_to_disk(str(path))
    return path


def test_save_to_disk_folder_reads_rows_with_stable_ids(tmp_path):
    path = save(tmp_path, "saved", {"text": TEXTS})
    corpus = open_corpus(f"hf:{path}")
    docs = list(corpus)
    assert corpus.source.kind is CorpusKind.HF
    assert [d.data.decode() for d in docs] == TEXTS
    assert [d.id for d in docs] == ["saved#0", "saved#1", "saved#2"]
    assert [d.id for d in open_corpus(f"hf:{path}")] == [d.id for d in docs]


def test_record_ids_and_another_field_are_used(tmp_path):
    path = save(tmp_path, "saved", {"content": TEXTS, "id": ["a", "b", "c"]})
    assert [d.id for d in open_corpus(f"hf:{path}", field="content")] == ["a", "b", "c"]
    with pytest.raises(CorpusError, match="no column 'text'.*content"):
        list(open_corpus(f"hf:{path}"))


def test_bad_rows_are_skipped_and_counted_by_reason(tmp_path):
    rows = ["ok\n", None, "   \n", "x" * 100, "fine\n"]
    path = save(tmp_path, "saved", {"text": rows})
    corpus = open_corpus(f"hf:{path}", max_doc_bytes=50)
    assert [d.data for d in corpus] == [b"ok\n", b"fine\n"]
    assert corpus.skipped == {SkipReason.MISSING_FIELD: 1, SkipReason.EMPTY: 1, SkipReason.TOO_LARGE: 1}


def test_non_string_and_invalid_utf8_rows_are_counted(tmp_path):
    numbers = save(tmp_path, "numbers", {"text": [1, 2]})
    corpus = open_corpus(f"hf:{numbers}")
    assert list(corpus) == [] and corpus.skipped == {SkipReason.NOT_STRING: 2}
    raw = save(tmp_path, "raw", {"text": [b"good\n", b"bad \xff\n"]})
    corpus = open_corpus(f"hf:{raw}")
    assert [d.data for d in corpus] == [b"good\n"] and corpus.skipped == {SkipReason.INVALID_UTF8: 1}


def test_strict_names_the_row(tmp_path):
    path = save(tmp_path, "saved", {"text": ["ok\n", "ok too\n", ""]})
    with pytest.raises(CorpusError, match=r"saved#2: empty document.*'empty'"):
        list(open_corpus(f"hf:{path}", strict=True))


def test_dataset_dict_reads_the_named_split_else_train(tmp_path):
    path = tmp_path / "dd"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": ["a\n", "b\n"]}), "test": datasets.Dataset.from_dict({"text": ["t\n"]})}
    ).save_to_disk(str(path))
    assert [d.id for d in open_corpus(f"hf:{path}")] == ["dd:train#0", "dd:train#1"]
    assert [d.data for d in open_corpus(f"hf:{path}:test")] == [b"t\n"]
    with pytest.raises(CorpusError, match="no split 'dev'.*train, test"):
        list(open_corpus(f"hf:{path}:dev"))


def test_folder_of_json_and_parquet_data_files(tmp_path):
    folder = tmp_path / "files"
    (folder / "data").mkdir(parents=True)
    with open(folder / "data" / "part-0.jsonl", "w") as fh:
        for text in TEXTS[:2] + [""]:
            fh.write(json.dumps({"text": text}) + "\n")
    corpus = open_corpus(f"hf:{folder}")
    assert [d.data.decode() for d in corpus] == TEXTS[:2]
    assert corpus.skipped == {SkipReason.EMPTY: 1}
    assert [d.id for d in open_corpus(f"hf:{folder}:train")] == ["files:train#0", "files:train#1"]

    pq_folder = tmp_path / "pq"
    pq_folder.mkdir()
    pq.write_table(pa.table({"text": TEXTS}), pq_folder / "train.parquet")
    assert [d.data.decode() for d in open_corpus(f"hf:{pq_folder}")] == TEXTS


def test_unparsable_data_file_is_counted_or_named_with_strict(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "data.jsonl").write_text('{"text": "ok"}\nnot json\n')
    corpus = open_corpus(f"hf:{folder}")
    list(corpus)
    assert corpus.skipped[SkipReason.UNREADABLE] == 1
    with pytest.raises(CorpusError, match="broken:train.*datasets cannot read"):
        list(open_corpus(f"hf:{folder}", strict=True))


def test_sources_that_are_not_datasets_are_clear_errors(tmp_path):
    with pytest.raises(CorpusError, match="not a directory"):
        open_corpus(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "one.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(CorpusError, match="without the hf: prefix"):
        open_corpus(f"hf:{tmp_path / 'one.jsonl'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="not a readable Hugging Face dataset"):
        list(open_corpus(f"hf:{tmp_path / 'empty'}"))
    single = save(tmp_path, "single", {"text": TEXTS})
    with pytest.raises(CorpusError, match="drop ':train'"):
        list(open_corpus(f"hf:{single}:train"))


def test_parse_keeps_colons_of_an_existing_path(tmp_path):
    odd = tmp_path / "a:b"
    odd.mkdir()
    assert parse_hf_source(f"hf:{odd}") == (odd, None)
    assert parse_hf_source(f"hf:{odd}:test") == (odd, "test")
    assert parse_hf_source("hf:/no/such:train") == (parse_hf_source("hf:/no/such")[0], "train")


def test_prepare_cli_reads_an_hf_corpus(tmp_path, capsys):
    from proxylm.cli import main

    path = save(tmp_path, "saved", {"text": TEXTS * 4})
    assert main(["prepare", "--corpus", f"hf:{path}", "--compressor", "gzip", "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["documents"] == 12 and manifest["corpus"]["kind"] == "hf"
