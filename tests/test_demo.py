"""`make demo` on a tiny corpus and model: every phase runs, the byte-only twin stops at the proxy
run's FLOPs, and written to a file (not a terminal) its log is the summary lines, without
progress-bar frames."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import write_stdlib_jsonl

from proxylm import demo

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_runs_every_phase_and_logs_lines_not_progress_bars(tmp_path, monkeypatch, capfd):
    corpus = write_stdlib_jsonl(tmp_path / "docs.jsonl", files=90, chars=1200)
    monkeypatch.chdir(REPO)  # the demo's config path is relative to the repository
    monkeypatch.setattr(demo, "STABILITY_SPECS", ["gzip", "bpe:vocab=300"])
    monkeypatch.setattr(demo, "EVAL_DOCS", 2)
    status = demo.main(["--steps", "2", "--compare-bytes", f"data.corpus={corpus}", f"data.shards={tmp_path / 'shards'}",
                        "data.compressor=bpe:vocab=300", f"run.out={tmp_path / 'run'}", "model.dim=32",
                        "model.n_layers=1", "model.n_heads=2", "pack.seq_len=64", "pack.batch_size=2",
                        "run.peak_flops=1.0e+11", "run.plot=false", "ckpt.every=0"])
    out, err = capfd.readouterr()
    assert status == 0, err[-2000:]
    for phase in ("1/4 prepare", "2/4 stability", "3/4 train: small proxy model, 2 steps", "4/4 evaluate",
                  "+ train: byte-only model of the same compute", "+ evaluate", "raw bits per byte at"):
        assert f"== {phase}" in out
    assert re.search(r"bits per byte, held-out stdlib \(2 documents, [\d,]+ bytes\): \d+\.\d{3}", out)
    assert re.search(r"bits per byte, HumanEval \(164 documents, [\d,]+ bytes\): \d+\.\d{3}", out)
    for prompt in demo.PROMPTS:
        assert out.count(f"greedy sample:\n{prompt}") == 2  # the proxy model's and the twin's
    proxy_flops = float(re.search(r"symbols covering [\d,]+ raw bytes \(([\d.e+]+) FLOPs", out).group(1))
    twin = [float(v) for v in re.findall(r"symbols covering [\d,]+ raw bytes \(([\d.e+]+) FLOPs", out)[1:]]
    assert len(twin) == 1 and 0.5 * proxy_flops < twin[0] <= proxy_flops  # whole steps up to the proxy's FLOPs
    assert re.search(r"proxy \(demo\)\s+\d+\.\d{3}\s+\d+\.\d{3}\nbytes, same FLOPs\s+\d+\.\d{3}\s+\d+\.\d{3}", out)
    assert "\r" not in out + err  # no progress-bar frames in a log
    assert len((out + err).splitlines()) < 90
