"""`proxylm eval harness`: lm-evaluation-harness tasks on a checkpoint (needs `pip install proxylm[lm-eval]`).

    proxylm eval harness --ckpt CKPT --tasks hellaswag,arc_easy [--limit K] [--json FILE]
    proxylm eval harness --ckpt CKPT --tasks my_task --include-path tasks/     # tasks defined in local YAML

Text is scored and generated as raw bytes (see proxylm.evaluate.harness); lm-eval's
`bits_per_byte` on a perplexity task equals `proxylm eval bpb` on the same documents.
Built-in tasks download their data from the Hugging Face hub; local ones need no network.
"""

from __future__ import annotations

import argparse

from proxylm.commands import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint, checkpoints directory or run directory")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names")
    parser.add_argument("--include-path", metavar="DIR", help="directory of extra task YAML files")
    parser.add_argument("--limit", type=positive_int, metavar="K", help="only the first K documents of each task")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (default: each task's own)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="requests per forward / decoding batch (default: 16)")
    parser.add_argument("--max-gen-bytes", type=positive_int, default=256, help="generation limit when a task sets none (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling and generation (default: 0)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--json", metavar="FILE", help="write lm-eval's results (without samples) here")


def run(args: argparse.Namespace) -> int:
    from proxylm.evaluate.harness import ProxyLM, evaluate_tasks
    from proxylm.io import atomic_write_json

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    lm = ProxyLM.from_checkpoint(args.ckpt, device=args.device, batch_size=args.batch_size, max_gen_bytes=args.max_gen_bytes)
    results = evaluate_tasks(lm, tasks, args.include_path, args.limit, args.num_fewshot, args.seed)
    summary = {"ckpt": args.ckpt, "tasks": tasks, "results": results["results"],
               "n-samples": results.get("n-samples"), "configs": results.get("configs")}
    for task, metrics in results["results"].items():
        shown = ", ".join(f"{k.split(',')[0]} {v:.4f}" for k, v in metrics.items()
                          if isinstance(v, (int, float)) and "stderr" not in k)
        print(f"{task}: {shown}")
    if args.json:
        atomic_write_json(args.json, summary)
    return 0
