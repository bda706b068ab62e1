"""`prepare` as datatrove tasks: the same shards' contents as the plain prepare, resumable, any reader."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from datatrove.executor import LocalPipelineExecutor  # requirements.txt installs the datatrove extra
from datatrove.pipeline.readers import JsonlReader

from proxylm.cli import main as cli_main
from proxylm.data.corpus import CorpusConfig, split_of
from proxylm.data.datatrove_step import MergeManifest, WriteShards, plan
from proxylm.data.prepare import PrepareConfig
from proxylm.data.prepare_tasks import merge_tasks
from proxylm.data.shards import MANIFEST, Shards, ShardsError

OPTIONS = ["--val-fraction", "0.2", "--shard-docs", "8", "--max-piece-bytes", "2048"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Five JSONL files of standard-library code (some documents long enough to become pieces)."""
    root = tmp_path_factory.mktemp("corpus")
    sources = sorted(Path(os.__file__).parent.glob("*.py"))[:30]
    for k in range(5):
        with open(root / f"part-{k}.jsonl", "w") as fh:
            for source in sources[k::5]:
                fh.write(json.dumps({"text": source.read_text()[:6000]}) + "\n")
            fh.write("not json\n")
    return root


def cli_prepare(corpus: Path, out: Path, *extra: str) -> dict:
    args = ["prepare", "--corpus", str(corpus / "*.jsonl"), "--compressor", "bpe:vocab=300", "--out", str(out), *OPTIONS, *extra]
    assert cli_main(args) == 0
    return json.loads((out / MANIFEST).read_text())


def contents(out: Path) -> dict[str, tuple[str, bytes, bytes]]:
    """Every stored piece by its id: (split, raw bytes, symbols)."""
    found = {}
    for split in ("train", "val"):
        shards = Shards.open(out, split)
        for i in range(len(shards)):
            found[shards.doc_id(i)] = (split, shards.raw(i).tobytes(), shards.symbols(i).tobytes())
    return found


FIGURES = ("documents", "pieces", "raw_bytes", "symbols", "skipped", "ratio")


def test_tasks_write_what_the_plain_prepare_writes(tmp_path, corpus):
    plain = cli_prepare(corpus, tmp_path / "plain")
    tasks = cli_prepare(corpus, tmp_path / "dt", "--executor", "datatrove", "--tasks", "4", "--workers", "2")
    assert {k: tasks[k] for k in FIGURES} == {k: plain[k] for k in FIGURES}
    for split in ("train", "val"):
        assert tasks["splits"][split]["documents"] == plain["splits"][split]["documents"]
    assert tasks["run"]["tasks"] == 4 and len({e["name"][:11] for e in tasks["splits"]["train"]["shards"]}) > 1
    expected = contents(tmp_path / "plain")
    assert plain["pieces"] > plain["documents"]  # long documents were cut: pieces are compared too
    assert contents(tmp_path / "dt") == expected
    for key, (split, _, _) in expected.items():
        assert split == split_of(key.split("@")[0], 0.2).value


def test_a_killed_task_is_rerun_alone(tmp_path, corpus):
    out = tmp_path / "dt"
    first = cli_prepare(corpus, out, "--executor", "datatrove", "--tasks", "4")
    expected = contents(out)
    logs = next((out / "tasks").glob("logs-*"))
    kept = out / "train" / "shard-00000-00000" / "sym.bin"
    before = kept.stat().st_mtime_ns
    # task 2 died before finishing: no completion, no record, its shards half-written
    (logs / "completions" / "00002").unlink()
    (out / "tasks" / "task-00002.json").unlink()
    (out / MANIFEST).unlink()
    for shard in (out / "train").glob("shard-00002-*"):
        shutil.rmtree(shard)
    with pytest.raises(ShardsError, match="task 2 of 4 has not finished"):
        merge_tasks(out)
    again = cli_prepare(corpus, out, "--executor", "datatrove", "--tasks", "4")
    assert {k: again[k] for k in FIGURES} == {k: first[k] for k in FIGURES}
    assert kept.stat().st_mtime_ns == before  # finished tasks were skipped
    assert contents(out) == expected


def test_any_datatrove_reader_feeds_the_shards(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    texts = {f"doc-{i}": f"def f{i}(x):\n    return x * {i}\n" * (1 + i % 3) for i in range(12)}
    with open(data / "a.jsonl", "w") as fh:
        for doc_id, text in texts.items():
            fh.write(json.dumps({"id": doc_id, "text": text}) + "\n")
        fh.write(json.dumps({"id": "blank", "text": "   \n"}) + "\n")
    out = tmp_path / "out"
    config = PrepareConfig(corpus=CorpusConfig(str(data)), compressor="gzip", out=str(out), val_fraction=0.25)
    plan(config, tasks=2)
    logs = tmp_path / "logs"
    LocalPipelineExecutor([JsonlReader(str(data)), WriteShards(out)], tasks=2, workers=1, logging_dir=str(logs / "w")).run()
    LocalPipelineExecutor([MergeManifest(out)], tasks=1, workers=1, logging_dir=str(logs / "m")).run()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["documents"] == 12 and manifest["skipped"]["empty"] == 1
    found = {doc_id: raw for doc_id, (_, raw, _) in contents(out).items()}
    assert found == {doc_id: text.encode() for doc_id, text in texts.items()}
    gzip = Shards.open(out, "train")
    assert gzip.compressor().decode(np.asarray(gzip.symbols(0))) == gzip.raw(0).tobytes()


def test_tasks_need_the_datatrove_executor_and_no_limit(tmp_path, corpus, capsys):
    args = ["prepare", "--corpus", str(corpus / "*.jsonl"), "--compressor", "raw", "--out", str(tmp_path / "o")]
    assert cli_main([*args, "--tasks", "2"]) == 2
    assert "--tasks needs --executor datatrove" in capsys.readouterr().err
    assert cli_main([*args, "--executor", "datatrove", "--limit", "3"]) == 2
    assert "limit counts documents in corpus order" in capsys.readouterr().err
