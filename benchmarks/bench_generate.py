"""Generation on CPU: bytes/s against batch size, one stream's step overhead, multi-byte (speculative) speed-up, and text bytes/s vs a BPE token model.

    .venv/bin/python benchmarks/bench_generate.py [--ckpt CKPT] [--train-steps 200] [--bytes 256] [--json FILE]
    .venv/bin/python benchmarks/bench_generate.py --only-batch [--batches 1,4,16,64] [--plot docs/generate_batch.png]

- Batch table: random-init `tiny` proxy, byte and token models decode `--bytes` ids per row after a
  64-id prompt, greedy, stops disabled, for each batch size (`decode_rows`: one KV cache, rows
  left-padded); aggregate ids/s wall-clock and per CPU-second of this process, and each batch
  size's aggregate over one stream of the same model, measured in the same run. The one-sequence
  loop (`decode_ids`, the generator before batching) is measured beside it: the step-overhead cut.
- HumanEval estimate: one `eval code` batch (16 rows: 10 samples of problem 0 and 6 of problem 1,
  real prompts) sampled at T = 0.8 for 256 bytes with stops disabled (every sample runs to 256
  bytes: an upper bound); 164 x 10 x 256 bytes at that aggregate rate.

- Speed of one forward does not depend on the weights, so the per-byte and per-token figures use
  randomly initialised models of the default CPU shape (`tiny`: dim 256, 6 layers, 4 heads): the
  proxy (vocab 320 + 4096, one raw head), the byte model (vocab 320) and the BPE token model
  (vocab 320 + 4096). Each decodes a fixed number of ids after a 64-byte prompt, greedy, stops
  disabled, with a KV cache; the best of `--repeats` runs counts.
- Text bytes/s of the token model = tokens/s x bytes per token, the ratio of a 4096-token BPE
  fitted on a stdlib sample and measured on held-out stdlib documents.
- The machine may be shared: ids/s is wall-clock (the best of `--repeats`), and the figures that
  compare two decoders (speculative vs one-byte, the ceiling) use CPU seconds of this process.
- Multi-byte decoding needs heads that have learned something: the speed-up is measured on
  `--ckpt`, or on a `tiny` byte model with 4 heads (head h predicts t+1+h) trained here for
  `--train-steps` steps on 800 stdlib files (vanilla bytes, the project's trainer). Its output is checked
  to equal one-byte greedy decoding. The ceiling (every draft accepted) is k x t(1 id) / t(k ids).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from proxylm import compress, vocab
from proxylm.config import from_dict
from proxylm.data.corpus import Split, hash_unit, iter_split, open_corpus
from proxylm.evaluate.decoder import Row, Sampling, decode_rows
from proxylm.evaluate.generate import Generator, allowed_mask, decode_ids, raw_output_ids
from proxylm.model import Transformer, model_preset

BPE_VOCAB = 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a trained checkpoint with extra heads for the speculative figures")
    parser.add_argument("--train-steps", type=int, default=200, help="steps to train the 4-head byte model without --ckpt")
    parser.add_argument("--bytes", type=int, default=256, help="ids decoded per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (the best counts)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one sequence decodes fastest on one thread of a busy CPU)")
    parser.add_argument("--json", help="write the figures as JSON")
    parser.add_argument("--only-batch", action="store_true", help="only the batch table and the HumanEval estimate")
    parser.add_argument("--batches", default="1,4,16,64", help="batch sizes of the table (default: 1,4,16,64)")
    parser.add_argument("--plot", help="write a PNG of bytes/s against batch size here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.1f}")

    figures: dict = {"threads": args.threads, "ids_per_run": args.bytes}
    figures["batch"] = batch_speeds(args)
    figures["humaneval"] = humaneval_estimate(args)
    if args.plot:
        plot_batch(figures["batch"], args.plot)
    if args.only_batch:
        write_json(args.json, figures)
        return
    figures["per_forward"] = forward_speeds(args)
    figures["ceiling"] = speculative_ceiling(args)
    figures["speculative"] = speculative_speedup(args)
    default = figures["per_forward"]["proxy"]
    figures["bytes_per_s"] = default["ids_per_s"]
    print(f"\nbytes_per_s (default proxy model, one byte per forward): {figures['bytes_per_s']:.0f} "
          f"({default['ids_per_cpu_s']:.0f} per CPU-second)")
    print(f"speculative speed-up on trained heads: {figures['speculative']['speedup']:.2f}x "
          f"({figures['speculative']['bytes_per_forward']:.2f} bytes per forward)")
    write_json(args.json, figures)


def write_json(path: str | None, figures: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(figures, indent=2) + "\n")


# ---- one id per forward ---------------------------------------------------------------------------


def tiny(vocab_size: int, **overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(model_preset("tiny", vocab_size, **overrides)).eval()


def ids_per_second(model: Transformer, prefix: list[int], n: int, allowed: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Best wall-clock ids/s over `repeats` runs, and ids per CPU-second of this process (load-independent)."""
    best = per_cpu_s = 0.0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = list(decode_ids(model, prefix, n, allowed, ()))
        rate = len(out) / (time.perf_counter() - wall)
        if rate > best:
            best, per_cpu_s = rate, len(out) / (time.process_time() - cpu)
    return best, per_cpu_s


def forward_speeds(args) -> dict:
    ratio = bpe_ratio()
    prompt = [vocab.BOS, vocab.RAW_OPEN] + vocab.bytes_to_ids(b"def fibonacci(n):\n    " * 3)[:62].tolist()
    byte_ids = range(vocab.BYTE_OFFSET, vocab.SYMBOL_OFFSET)
    symbol_vocab = vocab.vocab_size(BPE_VOCAB)
    rows = {
        "proxy": (tiny(symbol_vocab, n_raw_heads=1), prompt, byte_ids, 1.0),
        "bytes": (tiny(vocab.BYTE_VOCAB_SIZE), prompt, byte_ids, 1.0),
        "tokens": (tiny(symbol_vocab), [vocab.BOS] + list(range(vocab.SYMBOL_OFFSET, vocab.SYMBOL_OFFSET + 20)),
                   range(vocab.SYMBOL_OFFSET, symbol_vocab), ratio),
    }
    out = {}
    print(f"\n{'model (tiny shape)':<18} {'vocab':>6} {'ids/s':>8} {'ids/CPU-s':>10} {'bytes/id':>9} {'text bytes/s':>13}")
    for name, (model, prefix, allowed_ids, bytes_per_id) in rows.items():
        allowed = allowed_mask(model.cfg.vocab_size, allowed_ids)
        rate, per_cpu_s = ids_per_second(model, prefix, args.bytes, allowed, args.repeats)
        out[name] = {
            "vocab_size": model.cfg.vocab_size, "ids_per_s": rate, "ids_per_cpu_s": per_cpu_s,
            "bytes_per_id": bytes_per_id, "text_bytes_per_s": rate * bytes_per_id,
        }
        print(f"{name:<18} {model.cfg.vocab_size:>6} {rate:>8.0f} {per_cpu_s:>10.0f} {bytes_per_id:>9.2f} {rate * bytes_per_id:>13.0f}")
    token, proxy = out["tokens"]["text_bytes_per_s"], out["proxy"]["text_bytes_per_s"]
    print(f"raw-byte inference cost: the token model writes {token / proxy:.2f}x the text per second of the proxy model")
    return out


def bpe_ratio() -> float:
    """Held-out bytes per token of a 4096-token BPE fitted on a stdlib sample."""
    corpus = open_corpus("stdlib")
    docs = list(iter_split(corpus, Split.TRAIN, 0.0))
    fit = [d.data for d in docs if hash_unit(d.id, "bench-fit") < 0.05]
    test = [d.data for d in docs if 0.05 <= hash_unit(d.id, "bench-fit") < 0.08]
    bpe = compress.build(f"bpe:vocab={BPE_VOCAB}")
    bpe.fit(fit)
    return sum(map(len, test)) / sum(len(bpe.encode(d)) for d in test)


# ---- many rows per forward ------------------------------------------------------------------------


def models_and_prompts():
    """(model, prompt, allowed ids, text bytes per id) of the three tiny models."""
    prompt = [vocab.BOS, vocab.RAW_OPEN] + vocab.bytes_to_ids(b"def fibonacci(n):\n    " * 3)[:62].tolist()
    byte_ids = raw_output_ids()
    symbol_vocab = vocab.vocab_size(BPE_VOCAB)
    return {
        "proxy": (tiny(symbol_vocab, n_raw_heads=1), prompt, byte_ids, 1.0),
        "bytes": (tiny(vocab.BYTE_VOCAB_SIZE), prompt, byte_ids, 1.0),
        "tokens": (tiny(symbol_vocab), [vocab.BOS] + list(range(vocab.SYMBOL_OFFSET, vocab.SYMBOL_OFFSET + 63)),
                   list(range(vocab.SYMBOL_OFFSET, symbol_vocab)), None),
    }


def timed(fn) -> tuple[int, float, float]:
    """Ids fn() decodes, wall seconds, CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - wall, time.process_time() - cpu


def decode_batch(model, prompts: list[list[int]], n: int, allowed_ids, sampling: Sampling = Sampling()) -> int:
    rows = [Row(p, n, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(prompts)]
    for _ in decode_rows(model, rows, allowed_ids, sampling):
        pass
    return sum(r.stats.emitted for r in rows)


def batch_speeds(args) -> dict:
    batches = [int(b) for b in args.batches.split(",")]
    ratio = bpe_ratio()
    out: dict = {"bpe_bytes_per_token": ratio, "models": {}}
    print(f"\n{'model':<7} {'loop':<12} {'batch':>5} {'ids/s':>7} {'ids/CPU-s':>10} {'text B/s':>9} {'text B/CPU-s':>12} {'x one (CPU)':>11}")
    for name, (model, prompt, allowed_ids, bytes_per_id) in models_and_prompts().items():
        bytes_per_id = bytes_per_id or ratio
        allowed = allowed_mask(model.cfg.vocab_size, allowed_ids)
        rows = []
        for label, batch, fn in [("decode_ids", 1, lambda: len(list(decode_ids(model, prompt, args.bytes, allowed, ()))))] + [
            ("decode_rows", b, lambda b=b: decode_batch(model, [prompt] * b, args.bytes, allowed_ids)) for b in batches
        ]:
            fn()  # warm-up
            best = min((timed(fn) for _ in range(args.repeats)), key=lambda t: t[1])
            n, wall, cpu = best
            rows.append({"loop": label, "batch": batch, "ids_per_s": n / wall, "ids_per_cpu_s": n / cpu,
                         "text_bytes_per_s": n / wall * bytes_per_id, "text_bytes_per_cpu_s": n / cpu * bytes_per_id})
        one = next(r for r in rows if r["loop"] == "decode_rows" and r["batch"] == 1)
        for r in rows:
            r["x_one_stream_cpu"] = r["ids_per_cpu_s"] / one["ids_per_cpu_s"]
            r["x_one_stream_wall"] = r["ids_per_s"] / one["ids_per_s"]
            print(f"{name:<7} {r['loop']:<12} {r['batch']:>5} {r['ids_per_s']:>7.0f} {r['ids_per_cpu_s']:>10.0f} "
                  f"{r['text_bytes_per_s']:>9.0f} {r['text_bytes_per_cpu_s']:>12.0f} {r['x_one_stream_cpu']:>10.2f}x")
        out["models"][name] = {"vocab_size": model.cfg.vocab_size, "bytes_per_id": bytes_per_id, "rows": rows}
    return out


def humaneval_estimate(args) -> dict:
    from proxylm.evaluate.tasks import load_tasks

    model, _, allowed_ids, _ = models_and_prompts()["proxy"]
    problems = load_tasks("humaneval", limit=2)
    prompts = [[vocab.BOS, vocab.RAW_OPEN, *vocab.bytes_to_ids(p.prompt.encode()).tolist()] for p in problems for _ in range(10)][:16]
    n, wall, cpu = timed(lambda: decode_batch(model, prompts, 256, allowed_ids, Sampling(temperature=0.8)))
    total = 164 * 10 * 256
    result = {"rows": len(prompts), "mean_prompt_bytes": sum(map(len, prompts)) / len(prompts) - 2,
              "bytes_per_s": n / wall, "bytes_per_cpu_s": n / cpu, "total_bytes": total,
              "hours_wall": total / (n / wall) / 3600, "hours_cpu": total / (n / cpu) / 3600}
    print(f"\nHumanEval n=10, T=0.8, 256 bytes ({total} bytes, no early stops), tiny proxy, batches of 16: "
          f"{result['bytes_per_s']:.0f} bytes/s -> {result['hours_wall']:.2f} h here "
          f"({result['bytes_per_cpu_s']:.0f} bytes per CPU-second -> {result['hours_cpu']:.2f} h of one busy core)")
    return result


def plot_batch(batch: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, entry in batch["models"].items():
        rows = [r for r in entry["rows"] if r["loop"] == "decode_rows"]
        ax.plot([r["batch"] for r in rows], [r["text_bytes_per_cpu_s"] for r in rows], marker="o", label=f"{name}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (rows decoded together)")
    ax.set_ylabel("text bytes per CPU-second (aggregate)")
    ax.set_title("Batched generation, random-init tiny models, CPU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# ---- several ids per forward ------------------------------------------------------------------------


def speculative_ceiling(args) -> dict:
    """Seconds of one forward_step with k new ids vs one: the speed-up if every draft were right."""
    model = tiny(vocab.BYTE_VOCAB_SIZE, n_main_heads=4)
    out = {}
    for k in (1, 2, 4):
        times = []
        for _ in range(args.repeats):
            cache = model.init_cache(1)
            with torch.inference_mode():
                model.forward_step(torch.full((1, 64), vocab.BYTE_OFFSET), cache)
                start = time.process_time()
                for _ in range(32):
                    model.forward_step(torch.full((1, k), vocab.BYTE_OFFSET), cache)
                    cache.truncate(64)
            times.append((time.process_time() - start) / 32)
        out[k] = statistics.median(times)
    ceiling = {f"k={k}": k * out[1] / out[k] for k in (2, 4)}
    print(f"\nforward_step: {out[1] * 1e3:.2f} ms for 1 id, {out[2] * 1e3:.2f} ms for 2, {out[4] * 1e3:.2f} ms for 4; "
          f"ceiling speed-up {ceiling['k=2']:.2f}x (2 heads), {ceiling['k=4']:.2f}x (4 heads)")
    return {"seconds": {str(k): v for k, v in out.items()}, **ceiling}


def speculative_speedup(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or train_four_head_byte_model(Path(tmp), args.train_steps)
        fast = Generator.from_checkpoint(ckpt, device="cpu")
        slow = Generator.from_checkpoint(ckpt, device="cpu", speculative=False)
    prompts = held_out_prompts(8)
    t_fast = t_slow = 0.0
    n_bytes = forwards = 0
    for prompt in prompts:
        start = time.process_time()  # CPU seconds: a fair comparison on a machine others also load
        a = fast.generate(prompt, args.bytes)
        t_fast += time.process_time() - start
        start = time.process_time()
        b = slow.generate(prompt, args.bytes)
        t_slow += time.process_time() - start
        assert a.output == b.output, "speculative decoding differs from one-byte greedy decoding"
        n_bytes += len(a.output)
        forwards += a.stats.forwards
    result = {
        "ckpt": str(args.ckpt or f"tiny bytes, 4 heads, {args.train_steps} steps on stdlib"),
        "heads": fast.draft_heads,
        "bytes": n_bytes,
        "bytes_per_forward": n_bytes / max(forwards, 1),
        "bytes_per_cpu_s_one_byte": n_bytes / t_slow,
        "bytes_per_cpu_s_speculative": n_bytes / t_fast,
        "speedup": t_slow / t_fast,
    }
    print(f"\nspeculative on {result['ckpt']} ({result['heads']} heads), {len(prompts)} held-out prompts, {n_bytes} bytes: "
          f"{result['bytes_per_cpu_s_one_byte']:.0f} -> {result['bytes_per_cpu_s_speculative']:.0f} bytes per CPU-second, "
          f"{result['bytes_per_forward']:.2f} bytes per forward, identical output")
    return result


def held_out_prompts(n: int) -> list[bytes]:
    docs = iter_split(open_corpus("stdlib"), Split.VAL, 0.02)
    return [d.data[:200] for d, _ in zip(docs, range(n))]


def train_four_head_byte_model(tmp: Path, steps: int) -> Path:
    from proxylm.data.prepare import prepare
    from proxylm.train.config import TrainConfig
    from proxylm.train.trainer import train

    prepare("stdlib", "raw", tmp / "shards", limit=800)
    cfg = from_dict(TrainConfig, {
        "data": {"shards": str(tmp / "shards"), "compressor": "raw"},
        "schedule": {"phases": [{"mode": "vanilla", "rate_start": 0.0}]},
        "pack": {"seq_len": 256, "batch_size": 8},
        "model": {"preset": "tiny", "n_main_heads": 4},
        "optim": {"lr": 2e-3, "warmup_steps": 30},
        "run": {"out": str(tmp / "run"), "max_steps": steps, "log_every": 50, "plot": False},
    })
    start = time.perf_counter()
    result = train(cfg)
    print(f"\ntrained the 4-head byte model: {steps} steps in {time.perf_counter() - start:.0f} s, loss {result.loss:.3f}")
    return result.checkpoint


if __name__ == "__main__":
    main()
