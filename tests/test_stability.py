"""The stability probe: deletions, the paper's ranking (BPE more stable than gzip), CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from proxylm import compress
from proxylm.cli import main as cli_main
from proxylm.compress.raw import RawCompressor
from proxylm.config import ConfigError
from proxylm.data.corpus import CorpusConfig
from proxylm.probes.stability import (
    StabilityConfig,
    delete_characters,
    normalized_distance,
    probe_stability,
    truncate_utf8,
)


def test_delete_characters_removes_the_share_as_a_subsequence():
    text = "αβγ def ✓ " * 50  # multi-byte characters: deletions must not cut UTF-8 sequences
    edited = delete_characters(text, 0.1, np.random.default_rng(3))
    assert len(edited) == len(text) - round(0.1 * len(text))
    it = iter(text)
    assert all(ch in it for ch in edited)  # a subsequence of the original
    assert edited == delete_characters(text, 0.1, np.random.default_rng(3))
    assert edited != delete_characters(text, 0.1, np.random.default_rng(4))
    edited.encode("utf-8")


def test_truncate_utf8_ends_on_a_character_boundary():
    data = "ab✓cd".encode()
    assert truncate_utf8(data, 3) == b"ab"
    assert truncate_utf8(data, 5) == "ab✓".encode()
    assert truncate_utf8(data, 100) == data


def test_normalized_distance_of_a_deletion_in_bytes():
    a = np.frombuffer(b"abcdefghij", dtype=np.uint8)
    b = np.frombuffer(b"abcdefghi", dtype=np.uint8)
    assert normalized_distance(a, b) == pytest.approx(0.1)
    assert normalized_distance(a, a) == 0.0


def test_probe_ranks_bpe_more_stable_than_gzip_on_stdlib():
    config = StabilityConfig(
        corpus=CorpusConfig("stdlib"),
        compressors=["gzip", "bpe:vocab=512", "raw"],
        docs=12,
        max_bytes=4096,
        fit_bytes=1 << 20,
    )
    report = probe_stability(config)
    distance = {row.compressor: row.distance for row in report.rows}
    assert report.docs == 12
    assert distance["bpe:vocab=512"] < distance["gzip"]
    # raw bytes of mostly-ASCII code: the edit distance is the number of deleted bytes
    assert distance["raw"] == pytest.approx(0.1, abs=0.01)
    assert [row.compressor for row in report.ranking()][-1] == "gzip"
    assert report.to_json()["normalized_levenshtein"] == distance


class RecordingCompressor(RawCompressor):
    """A trainable raw compressor that remembers what it was fitted on."""

    name = "recording"
    trainable = True
    fitted_on: list[bytes] = []

    def __init__(self) -> None:
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def fit(self, docs) -> None:
        RecordingCompressor.fitted_on = list(docs)
        self._ready = True


def test_trainable_compressors_are_fitted_without_the_probed_documents(tmp_path, monkeypatch):
    monkeypatch.setitem(compress.REGISTRY, "recording", f"{__name__}:RecordingCompressor")
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": f"document number {i}\n"}) + "\n" for i in range(40)))
    config = StabilityConfig(corpus=CorpusConfig(str(path)), compressors=["recording"], docs=10, val_fraction=0.0)
    report = probe_stability(config)
    line_of = {f"c.jsonl:{i + 1}": f"document number {i}\n".encode() for i in range(40)}
    probed = {line_of[doc_id] for doc_id in report.doc_ids}
    assert len(probed) == 10
    assert set(RecordingCompressor.fitted_on) == set(line_of.values()) - probed


def test_config_validation():
    with pytest.raises(ConfigError, match="at least one compressor"):
        StabilityConfig(corpus=CorpusConfig("stdlib"), compressors=[])
    with pytest.raises(ConfigError, match="deletion"):
        StabilityConfig(corpus=CorpusConfig("stdlib"), compressors=["raw"], deletion=1.5)


def test_cli_writes_json_with_a_headline_key(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"m{i}.py").write_text(f"def function_{i}(x):\n    return x * {i} + {i * i}\n" * 20)
    out = tmp_path / "stability.json"
    code = cli_main(["probe", "stability", "--corpus", str(src), "--compressors", "raw,gzip", "--docs", "4", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "gzip" in printed and "norm. Levenshtein" in printed
    result = json.loads(out.read_text())
    assert set(result["normalized_levenshtein"]) == {"raw", "gzip"}
    assert result["docs"] == 4 and result["ranking"] == ["raw", "gzip"]


def test_cli_missing_corpus_exits_2(tmp_path, capsys):
    code = cli_main(["probe", "stability", "--corpus", str(tmp_path / "none"), "--compressors", "gzip"])
    assert code == 2
    assert "corpus not found" in capsys.readouterr().err
