"""Running the study's parts: prepare, train, evaluate, stability, report.

    run_study(load_study_config("configs/study-cpu.yaml"))

Design choices:
- Parts run in a fixed order and each does only what is missing: prepare is idempotent (proxylm
  prepare), a trained trial is not retrained, an evaluated one is not re-scored, an interrupted
  training resumes from its newest checkpoint (ckpt.resume), and the report is rebuilt from
  whatever results exist. In one process a trial is evaluated right after it is trained, so a
  partial study has complete rows.
- Evaluation: raw-view BPB (a token model's nats over the raw bytes) on the same held-out
  documents for every arm: a hash sample of the whole corpus's val split, documents that no
  preparation trains on whatever `data.limit` is. Scored at every curve checkpoint, each point
  with the FLOPs and raw bytes the run had trained on by then (the checkpoint's counters).
  Beside it, real code no arm trains on: the HumanEval and MBPP reference programs (prompt +
  canonical solution, whole), scored at the final checkpoint. Scores are cached per checkpoint
  and settings, so changed settings re-score without retraining and adding a code set keeps
  the scored curve; the translation probe on the final checkpoint of arms that read compressed
  views in context; the stability probe on the exact compressors the arms trained with.
- torchrun: every rank trains each trial in one process group kept for the whole train part
  (the trainer's setup and loop; ranks meet at a barrier between trials), and rank 0 writes. Preparing and evaluating are one-process parts (the other ranks would wait on
  rank 0 past the process group's timeouts), run before and after with a plain `proxylm study`.
- The neural proxy codes with `neural_lm.model`, or a byte LM the prepare part trains on the bpe
  shards' training text laid out as the coder's rows: `<bos>` + a chunk that starts anywhere in a
  piece and is at most a window long (a model trained on whole pieces would expect `<bos>` before
  a file's first bytes only). Like the paper's compressor LM it is not counted in the arms' budgets.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from proxylm.config import from_dict, to_dict
from proxylm.data.schedule import bytes_baseline
from proxylm.errors import UserError
from proxylm.io import atomic_write_json
from proxylm.study.arms import ARMS, ArmContext
from proxylm.study.config import Part, Proxy, StudyConfig, code_set_name
from proxylm.study.trials import (
    RESULT_FILE,
    TRAINED_FILE,
    TRIAL_FILE,
    Trial,
    checked_config,
    fingerprint,
    non_default,
    read_json,
    trial_state,
    trials,
)
from proxylm.train.config import ModelSection, TrainConfig, resolve_dtype

STUDY_VERSION = 1
STABILITY_FILE = "stability.json"
CODE_SET_KEYS = ("code_sets", "code_docs")  # evaluation settings that only the code sets depend on
CHUNKS_FILE = "chunks.jsonl"  # the neural proxy's byte LM's corpus, in its directory


def is_main_process() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def say(message: str) -> None:
    if is_main_process():
        print(message, file=sys.stderr, flush=True)


def data_dir(cfg: StudyConfig) -> Path:
    return Path(cfg.data.dir) if cfg.data.dir else Path(cfg.out) / "data"


def arm_context(cfg: StudyConfig) -> ArmContext:
    return ArmContext(shards={p: data_dir(cfg) / p.value for p in Proxy}, specs=cfg.compressors, world_size=world_size(),
                      cache_dir=Path(cfg.out) / "cache")


def needed_proxies(cfg: StudyConfig) -> list[Proxy]:
    """The proxies the chosen trials train on; BPE always (the bytes and token arms read its shards)."""
    used = {ARMS[t.arm].proxy for t in trials(cfg)} | {Proxy.BPE}
    return [p for p in Proxy if p in used]


def run_study(cfg: StudyConfig) -> dict[str, Any] | None:
    """Run the configured parts in order; returns the report's summary when the report part ran."""
    ctx = arm_context(cfg)
    if Part.PREPARE in cfg.parts:
        prepare_data(cfg, ctx)
    if Part.TRAIN in cfg.parts or Part.EVALUATE in cfg.parts:
        run_trials(cfg, ctx)
    if not is_main_process():
        return None
    if Part.STABILITY in cfg.parts:
        run_stability(cfg, ctx)
    if Part.REPORT in cfg.parts:
        from proxylm.study.report import write_report

        return write_report(cfg)
    return None


# ---- prepare -------------------------------------------------------------------------------------


def prepare_data(cfg: StudyConfig, ctx: ArmContext) -> None:
    from proxylm.data.prepare import prepare

    if ctx.world_size > 1:
        missing = [str(ctx.shards[p]) for p in needed_proxies(cfg) if not (ctx.shards[p] / "manifest.json").is_file()]
        if missing:
            raise UserError(f"{missing[0]} is not prepared; run `proxylm study CONFIG --parts prepare` without torchrun first")
        return
    for proxy in needed_proxies(cfg):  # BPE first: the neural proxy's byte LM trains on its shards
        spec = ctx.specs.spec(proxy)
        if proxy is Proxy.NEURAL:
            spec += f",model={compressor_lm(cfg, ctx).resolve()}"
        say(f"study: preparing {proxy.value} ({spec}) in {ctx.shards[proxy]}")
        prepare(
            cfg.data.corpus, spec, ctx.shards[proxy], workers=cfg.data.workers, limit=cfg.data.limit,
            val_fraction=cfg.data.val_fraction, fit_bytes=cfg.data.fit_bytes,
            max_piece_bytes=cfg.data.max_piece_bytes, progress=True,
        )


def compressor_lm(cfg: StudyConfig, ctx: ArmContext) -> Path:
    """The byte LM the neural proxy codes with: the configured one, or one trained here (resumably)."""
    from proxylm.train import train

    lm = cfg.neural_lm
    if lm.model is not None:
        return Path(lm.model)
    lm_cfg = compressor_lm_config(cfg)
    corpus = Path(lm_cfg.data.corpus)
    if not corpus.is_file():
        chunks = coder_chunks(cfg)
        count = write_coder_chunks(ctx.shards[Proxy.BPE], chunks, corpus)
        say(f"study: {count:,} training chunks of {chunks.shortest}-{chunks.longest} bytes for the neural proxy's byte LM")
    say(f"study: the neural proxy's byte LM ({lm.preset} {lm.shape or ''}, {lm.steps} steps) in {lm_cfg.run.out}")
    return train(lm_cfg).checkpoint


@dataclasses.dataclass(frozen=True)
class CoderChunks:
    """How the neural proxy's byte LM sees its training text: chunks of shortest..longest bytes
    (proxylm.compress.byte_model.training_chunks), each trained as `<bos> chunk <eos>`."""

    shortest: int
    longest: int  # the longest row the coder scores after <bos>
    seed: int

    @property
    def unit(self) -> int:
        """Positions of the longest unit: <bos>, a chunk (up to 3 bytes longer, to end its last character), <eos>."""
        return self.longest + 5


def coder_chunks(cfg: StudyConfig) -> CoderChunks:
    """Chunks as long as the coder's rows: a whole window, plus the context before it when the
    coder does not reset the model at each window; most windows are a few bytes, so chunks start
    short."""
    from proxylm.compress import parse_spec
    from proxylm.compress.byte_model import SHORTEST_CHUNK
    from proxylm.compress.neural import NeuralConfig

    params = parse_spec(cfg.compressors.neural)[1]
    known = {f.name for f in dataclasses.fields(NeuralConfig)}
    coder = from_dict(NeuralConfig, {k: v for k, v in params.items() if k in known}, prefix="compressors.neural.")
    longest = coder.longest_row
    return CoderChunks(shortest=min(SHORTEST_CHUNK, longest), longest=longest, seed=cfg.train.run.seed)


def write_coder_chunks(bpe_shards: Path, chunks: CoderChunks, out: Path) -> int:
    """The compressor LM's corpus: the bpe shards' training pieces cut into chunks, as JSONL."""
    import numpy as np

    from proxylm.compress.byte_model import write_training_chunks
    from proxylm.data.shards import Shards

    shards = Shards.open(bpe_shards, "train")
    pieces = ((shards.doc_id(i), shards.raw(i).tobytes()) for i in range(len(shards)))
    return write_training_chunks(pieces, out, np.random.default_rng(chunks.seed), chunks.shortest, chunks.longest)


def compressor_lm_config(cfg: StudyConfig) -> TrainConfig:
    """How the neural proxy's byte LM trains: in bytes mode on the bpe shards' training text in
    coder chunks (`<bos>` + bytes from anywhere in a piece, at most a coder row long), so that it
    learns what the coder asks of it: a byte given a window's first bytes. A plain byte LM (one
    head) of `neural_lm`'s shape with the study's optimiser settings, in a directory named by
    everything that shapes it, so a changed setting trains a new LM instead of resuming another."""
    lm, chunks = cfg.neural_lm, coder_chunks(cfg)
    if chunks.unit > lm.seq_len:
        raise UserError(f"neural_lm.seq_len={lm.seq_len} must be at least {chunks.unit}: a training chunk is as long as the "
                        f"coder's rows ({chunks.longest} bytes for `{cfg.compressors.neural}`) plus <bos>, <eos> and a character's end")
    lm_cfg = copy.deepcopy(cfg.train)
    lm_cfg.schedule = bytes_baseline()
    lm_cfg.model = from_dict(ModelSection, {"preset": lm.preset, **lm.shape}, prefix="neural_lm.shape.")
    # whole_units: no chunk is cut by a row end and continued in the next batch without its <bos>
    # (a later chunk that fits fills the row end).
    lm_cfg.pack = dataclasses.replace(lm_cfg.pack, seq_len=lm.seq_len, batch_size=lm.batch_size, whole_units=True)
    lm_cfg.run.max_steps, lm_cfg.run.max_flops, lm_cfg.run.max_time_s = lm.steps, None, None
    lm_cfg.optim = dataclasses.replace(lm_cfg.optim, warmup_steps=min(lm_cfg.optim.warmup_steps, lm.steps // 10))
    text = {k: getattr(cfg.data, k) for k in ("corpus", "limit", "val_fraction", "max_piece_bytes")}
    key = {"text": text, "chunks": dataclasses.asdict(chunks), "model": to_dict(lm_cfg.model), "pack": to_dict(lm_cfg.pack),
           "optim": to_dict(lm_cfg.optim), "steps": lm.steps, "dtype": lm_cfg.run.dtype.value}
    directory = Path(cfg.out) / "compressor-lm" / fingerprint(key)
    lm_cfg.data = dataclasses.replace(lm_cfg.data, shards=str(directory / "data"), corpus=str(directory / CHUNKS_FILE),
                                      compressor="raw", workers=1, max_piece_bytes=None)
    lm_cfg.run.out = str(directory)
    lm_cfg.ckpt = dataclasses.replace(lm_cfg.ckpt, dir=None, resume=True, every=max(1, lm.steps // 4), keep=1)
    return lm_cfg


# ---- train and evaluate --------------------------------------------------------------------------


def run_trials(cfg: StudyConfig, ctx: ArmContext) -> None:
    from proxylm.train.distributed import barrier, compute_cleanup, compute_init

    chosen = trials(cfg)
    evaluating = Part.EVALUATE in cfg.parts and is_main_process()
    if Part.EVALUATE in cfg.parts and ctx.world_size > 1:
        say("study: evaluation is a one-process part; run `proxylm study CONFIG --parts evaluate` after this")
        evaluating = False
    docs = eval_documents(cfg) if evaluating else []
    code = code_documents(cfg) if evaluating else {}
    # One process group for the whole part: ranks meet at a barrier after each trial, while rank 0
    # writes its files, instead of leaving and re-joining a group between trials.
    info = compute_init(cfg.train.dist) if Part.TRAIN in cfg.parts else None
    try:
        for index, trial in enumerate(chosen, start=1):
            tag = f"[{index}/{len(chosen)}] {trial.key}"
            if info is not None:
                train_trial(cfg, ctx, trial, tag, info)
                barrier(info)
            if evaluating:
                evaluate_trial(cfg, ctx, trial, docs, tag, code)
    finally:
        if info is not None:
            compute_cleanup()


def train_run(train_cfg: Any, info: Any) -> Any:
    """The trainer's setup and loop in the study's process group (proxylm.train.train would leave it)."""
    from proxylm.train.trainer import fit, setup

    return fit(setup(train_cfg, info))


def machine(device: Any) -> str:
    """E.g. 'AMD EPYC (AVX2), 2 cores': the CPU model, the vector extension torch dispatches to
    (it decides the speed and whether `run.dtype: auto` means bf16) and the core count; a GPU's name."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores"


def train_trial(cfg: StudyConfig, ctx: ArmContext, trial: Trial, tag: str, info: Any) -> None:
    """Train one trial unless it is trained; rank 0 records its summary in trained.json."""
    directory = trial.directory(cfg.out)
    state = trial_state(cfg, trial)
    train_cfg, fingerprints = checked_config(cfg, ctx, trial, state)
    if state.trained is not None:
        say(f"study: {tag}: trained, skipped")
        return
    if is_main_process():
        atomic_write_json(directory / TRIAL_FILE, {"trial": trial.key, **fingerprints,
                                                   "world_size": ctx.world_size, "config": to_dict(train_cfg)})
    run = train_cfg.run
    stop = f"{run.max_flops:.3g} FLOPs" if run.max_flops else f"{run.max_steps} steps"
    if train_cfg.mix.drop_compressed:
        stop += " (the raw views of proxy-bpe's documents)"
    say(f"study: {tag}: training to {stop}")
    started = time.perf_counter()
    result = train_run(train_cfg, info)
    if is_main_process():
        atomic_write_json(directory / TRAINED_FILE, {
            "steps": result.steps, "flops": result.flops, "symbols": result.symbols, "raw_bytes": result.raw_bytes,
            "train_time_s": result.train_time_s, "wall_s": time.perf_counter() - started, "loss": result.loss,
            "loss_raw": result.loss_raw, "loss_compressed": result.loss_compressed,
            "run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint), "world_size": ctx.world_size,
            "dtype": resolve_dtype(train_cfg.run.dtype, info.device).value, "machine": machine(info.device),
        })
        say(f"study: {tag}: {result.steps} steps, {result.flops:.3g} FLOPs in {result.train_time_s:.0f} s")


def evaluate_trial(cfg: StudyConfig, ctx: ArmContext, trial: Trial, docs: list[tuple[str, bytes]], tag: str,
                   code: dict[str, list[tuple[str, bytes]]] | None = None) -> dict[str, Any] | None:
    """Score a trained trial unless its result (under these evaluation settings) exists; `code`:
    the real-code sets by name (code_documents), None: loaded here."""
    directory = trial.directory(cfg.out)
    state = trial_state(cfg, trial)
    if state.trained is None:
        say(f"study: {tag}: not trained yet, nothing to evaluate")
        return None
    _, fingerprints = checked_config(cfg, ctx, trial, state)
    eval_fp = fingerprint(to_dict(cfg.eval))
    if state.result is not None and state.result.get("eval_fingerprint") == eval_fp:
        say(f"study: {tag}: evaluated (bpb {state.result['bpb']:.4f}), skipped")
        keep_result(cfg, trial, state.result)
        return state.result
    started = time.perf_counter()
    trained = state.trained
    code = code_documents(cfg) if code is None else code
    record = {
        "study_version": STUDY_VERSION,
        "trial": trial.key, "size": trial.size.label, "preset": trial.size.preset, "arm": trial.arm.value, "seed": trial.seed,
        "compressor": cfg.compressors.spec(ARMS[trial.arm].proxy),
        "budget": {"flops": trial.size.flops, "symbols": trial.size.symbols},
        "train": trained,
        **score_trial(cfg, trial, trained, docs, code),
        "eval_wall_s": time.perf_counter() - started,
        **fingerprints,
        "eval_fingerprint": eval_fp,
    }
    atomic_write_json(directory / RESULT_FILE, record)
    keep_result(cfg, trial, record)
    if not cfg.keep_checkpoints:
        prune_curve_checkpoints(Path(trained["checkpoint"]))
    on_code = "".join(f", {name} {score['bpb']:.4f}" for name, score in record["code"].items())
    say(f"study: {tag}: bpb {record['bpb']:.4f}{on_code}")
    return record


def keep_result(cfg: StudyConfig, trial: Trial, record: dict[str, Any]) -> None:
    """Copy a trial's result into the results_dir (if one is set and its copy differs)."""
    if cfg.results_dir and read_json(trial.kept_result(cfg.results_dir)) != record:
        atomic_write_json(trial.kept_result(cfg.results_dir), record)


def stability_paths(cfg: StudyConfig) -> list[Path]:
    """Where the stability probe is written (and read back from, the first that exists)."""
    return [Path(cfg.out) / STABILITY_FILE] + ([Path(cfg.results_dir) / STABILITY_FILE] if cfg.results_dir else [])


def read_stability(cfg: StudyConfig) -> dict[str, Any] | None:
    return next((r for path in stability_paths(cfg) if (r := read_json(path)) is not None), None)


def eval_documents(cfg: StudyConfig) -> list[tuple[str, bytes]]:
    """The held-out documents every arm is scored on: a hash sample of the whole corpus's val split
    (in pieces like the training documents), each cut short."""
    from proxylm.evaluate.heldout import sample_heldout_pieces

    return sample_heldout_pieces(cfg.data.corpus, cfg.data.val_fraction, cfg.data.max_piece_bytes, cfg.eval.docs,
                                 max_bytes=cfg.eval.max_doc_bytes)


def code_documents(cfg: StudyConfig) -> dict[str, list[tuple[str, bytes]]]:
    """The real-code held-out sets by benchmark name: each reference program (prompt + canonical
    solution), whole; the first eval.code_docs of each."""
    from proxylm.evaluate.tasks import load_tasks

    sets = {}
    for spec in cfg.eval.code_sets:
        try:
            problems = load_tasks(spec, limit=cfg.eval.code_docs)
        except UserError as exc:
            raise UserError(f"eval.code_sets: {spec!r}: {exc} (or leave it out of eval.code_sets)") from None
        sets[code_set_name(spec)] = [(p.task_id, p.reference.encode()) for p in problems]
    return sets


def checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint, by step."""
    import re

    from proxylm.train.checkpoint import TRAIN_STATE

    found = []
    for path in ckpt_dir.glob("step-*"):
        match = re.fullmatch(r"step-(\d+)", path.name)
        if match and (path / TRAIN_STATE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def curve_fingerprint(cfg: StudyConfig) -> str:
    """What a held-out (stdlib) score depends on: the evaluation settings without the code sets,
    so adding or changing a code set keeps the cached curve points."""
    settings = to_dict(cfg.eval)
    for key in CODE_SET_KEYS:
        settings.pop(key)
    return fingerprint(settings)


def score_trial(cfg: StudyConfig, trial: Trial, trained: dict[str, Any], docs: list[tuple[str, bytes]],
                code: dict[str, list[tuple[str, bytes]]]) -> dict[str, Any]:
    """Held-out BPB at each curve point; the code sets and the translation probe at the final checkpoint."""
    import functools

    from proxylm.evaluate.bpb import EvalCheckpoint
    from proxylm.evaluate.generate import default_device

    on_disk = dict(checkpoints(Path(trained["checkpoint"]).parent))
    if not on_disk:
        raise UserError(f"{Path(trained['checkpoint']).parent}: no checkpoint to evaluate")
    final_step = max(on_disk)
    final_checkpoint = functools.cache(lambda: EvalCheckpoint.load(on_disk[final_step], default_device()))
    cache_dir = Path(trained["run_dir"]) / "study-evals" / curve_fingerprint(cfg)
    points = score_curve(cfg, cache_dir, on_disk, trained, docs)
    code_scores = {}
    for name, programs in code.items():
        key = fingerprint({"code_set": name, "programs": [doc_id for doc_id, _ in programs]})
        code_scores[name] = cached_score(cache_dir / f"code-{key}-step-{final_step}.json",
                                         lambda: timed(lambda: score_bpb(cfg, final_checkpoint(), programs)))
    translation = None
    if ARMS[trial.arm].translation_probe:
        translation = timed(lambda: translate(cfg, final_checkpoint(), docs))
    final = points[-1]
    spent = [*points, *code_scores.values(), translation or {}]
    return {"bpb": final["bpb"], "params": final["params"],
            "eval": {k: v for k, v in final.items() if k not in ("bpb", "counters", "seconds")},
            "curve": [curve_point(p, trained) for p in points],
            "code": {name: code_summary(scored) for name, scored in code_scores.items()},
            "translation": translation, "eval_time_s": sum(part.get("seconds", 0.0) for part in spent)}


def score_curve(cfg: StudyConfig, cache_dir: Path, on_disk: dict[int, Path], trained: dict[str, Any],
                docs: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """The scores of every curve point, by step: each checkpoint still on disk and each step scored
    before (whose checkpoint may be pruned since), scored once and cached with its counters."""
    final_step = max(on_disk)
    steps = sorted({step for step in cached_steps(cache_dir) if step <= final_step} | set(on_disk))
    points = [cached_score(cache_dir / f"step-{step}.json", lambda: score_point(cfg, on_disk[step], docs)) for step in steps]
    if any("counters" not in p for p in points):  # cached before points carried counters: the metrics log has them
        logged = logged_counters(Path(trained["run_dir"]))
        points = [p if "counters" in p else {**p, "counters": {"step": step, **logged.get(step, {})}} for step, p in zip(steps, points)]
    return points


def cached_score(path: Path, score: Any) -> dict[str, Any]:
    """The score cached at `path`, else `score()` written there."""
    found = read_json(path)
    if found is None:
        found = score()
        atomic_write_json(path, found)
    return found


def cached_steps(cache_dir: Path) -> list[int]:
    import re

    return [int(m.group(1)) for path in cache_dir.glob("step-*.json") if (m := re.fullmatch(r"step-(\d+)\.json", path.name))]


def timed(work: Any) -> dict[str, Any]:
    """work()'s dict with the seconds it took."""
    started = time.perf_counter()
    result = work()
    return {**result, "seconds": time.perf_counter() - started}


def score_point(cfg: StudyConfig, path: Path, docs: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Held-out BPB of one curve checkpoint, with the counters it was saved with."""
    from proxylm.evaluate.bpb import EvalCheckpoint
    from proxylm.evaluate.generate import default_device
    from proxylm.train.checkpoint import read_train_state

    counters = read_train_state(path)["counters"]
    scored = timed(lambda: score_bpb(cfg, EvalCheckpoint.load(path, default_device()), docs))
    return {**scored, "counters": {key: counters[key] for key in ("step", "flops", "symbols", "raw_bytes")}}


def logged_counters(run_dir: Path) -> dict[int, dict[str, Any]]:
    """The run's counters at each logged step, from its metrics.jsonl."""
    from proxylm.train.metrics import read_metrics
    from proxylm.train.trainer import METRICS_FILE

    return {r["step"]: {key: r[key] for key in ("flops", "symbols", "raw_bytes") if key in r}
            for r in read_metrics(run_dir / METRICS_FILE) if "step" in r}


def curve_point(scored: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """step, training FLOPs, raw bytes trained on by then (None where no record has them) and BPB."""
    counters = scored["counters"]
    step = counters["step"]
    flops = counters.get("flops", step * trained["flops"] / max(trained["steps"], 1))
    return {"step": step, "flops": flops, "raw_bytes": counters.get("raw_bytes"), "bpb": scored["bpb"]}


def code_summary(scored: dict[str, Any]) -> dict[str, Any]:
    return {key: scored[key] for key in ("bpb", "documents", "raw_bytes", "targets", "nats", "seconds") if key in scored}


def score_bpb(cfg: StudyConfig, ckpt: Any, docs: list[tuple[str, bytes]]) -> dict[str, Any]:
    from proxylm.evaluate.bpb import evaluate_bpb

    view = ckpt.view
    compressor = ckpt.compressor() if view.needs_compressor else None
    context = cfg.eval.context or cfg.train.pack.seq_len
    result = evaluate_bpb(ckpt.model, docs, context, cfg.eval.stride, view=view, compressor=compressor,
                          batch_size=cfg.eval.batch_size, progress=True)
    return {**result.to_dict(per_document=False), "params": ckpt.model.num_params(include_embeddings=False)}


def translate(cfg: StudyConfig, ckpt: Any, docs: list[tuple[str, bytes]]) -> dict[str, Any]:
    from proxylm.evaluate.translate import probe_translation

    report = probe_translation(ckpt.model, docs[: cfg.eval.translate_docs], ckpt.compressor(),
                               max_doc_bytes=cfg.eval.translate_max_bytes, batch_size=cfg.eval.batch_size, progress=True)
    return report.to_dict()


def prune_curve_checkpoints(final: Path) -> None:
    """Delete every checkpoint but the final one (the curve points are scored and cached)."""
    for _, path in checkpoints(final.parent):
        if path.resolve() != final.resolve():
            shutil.rmtree(path, ignore_errors=True)


# ---- stability ----------------------------------------------------------------------------------


def stability_fingerprint(cfg: StudyConfig, proxies: list[Proxy], doc_ids: list[str]) -> str:
    """What the probe measures, as the configs define it (like a kept result's config fingerprint):
    a fresh checkout's new fit of the same compressors keeps the kept measurement."""
    preparation = {"data": non_default(cfg.data), "compressors": [cfg.compressors.spec(p) for p in proxies]}
    if Proxy.NEURAL in proxies:  # the byte LM's directory is named by everything that shapes it
        preparation["neural_lm"] = Path(compressor_lm_config(cfg).run.out).name
    return fingerprint({"preparation": preparation, "docs": doc_ids, "eval": to_dict(cfg.eval)})


def run_stability(cfg: StudyConfig, ctx: ArmContext) -> dict[str, Any]:
    """Stability of each prepared proxy the study uses, on the held-out documents."""
    from proxylm.data.corpus import CorpusConfig, Document
    from proxylm.data.shards import Shards
    from proxylm.probes.stability import StabilityConfig, measure, perturbed_pair

    proxies = [p for p in needed_proxies(cfg) if (ctx.shards[p] / "manifest.json").is_file()]
    docs = eval_documents(cfg)[: cfg.eval.stability_docs]
    key = stability_fingerprint(cfg, proxies, [doc_id for doc_id, _ in docs])
    existing = read_stability(cfg)
    if existing is not None and existing.get("fingerprint") == key:
        say("study: stability probe: done, skipped")
        for path in stability_paths(cfg):
            if read_json(path) != existing:
                atomic_write_json(path, existing)
        return existing
    specs = [ctx.specs.spec(p) for p in proxies]
    probe = StabilityConfig(corpus=CorpusConfig(source=cfg.data.corpus), compressors=specs, docs=len(docs),
                            max_bytes=cfg.eval.max_doc_bytes)
    pairs = [perturbed_pair(Document(doc_id, data), probe) for doc_id, data in docs]
    rows = [{"proxy": proxy.value, **vars(measure(spec, Shards.open(ctx.shards[proxy]).compressor(), pairs, progress=True))}
            for proxy, spec in zip(proxies, specs)]
    report = {"fingerprint": key, "metric": "normalised Levenshtein distance after deleting 10% of characters",
              "deletion": probe.deletion, "seed": probe.seed, "docs": len(pairs), "rows": rows}
    for path in stability_paths(cfg):
        atomic_write_json(path, report)
    return report
