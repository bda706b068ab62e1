"""The study's report: tables (Markdown and JSON), findings and PNG plots, rebuilt from whatever
trial results exist.

    summary = write_report(cfg)   # <out>/results.json, <out>/RESULTS.md, <out>/figures/*.png

Design choices:
- Only measured numbers: every figure comes from a trial's result.json, stability.json or a
  prepared proxy's manifest (its compression, also kept in the results_dir's compression.json so
  a fresh checkout states it); a missing trial is a missing row, and the report says how many
  seeds each row holds.
- Compression is stated in bits, raw bits over the bits of the symbols (log2 of the alphabet per
  symbol), the unit of the paper's ~2.6x for its neural proxy, on each proxy's held-out pieces
  (which no compressor was fitted or trained on) and on its training pieces.
- Held-out sets: the corpus's held-out documents (`stdlib` in tables, scored at every curve
  point) and, where evaluated, real code (the HumanEval and MBPP reference programs, scored at
  the final checkpoint). Every table and finding covers each set the results hold.
- Seeds are summarised as mean, sample standard deviation and range. Arms share each seed's data
  order and initial weights, so two arms are compared paired: over the seeds both have,
  d_s = BPB_a(s) - BPB_b(s), reported as mean(d) ± sd(d)/sqrt(n) with n. A difference is called
  resolved when |mean(d)| exceeds twice that standard error; with fewer than two common seeds no
  spread is measured and the report says so instead of a verdict. The trend with size is called
  the same way: the change of the paired gap from one size to the next against the two sizes'
  standard errors combined.
- Findings compare this study with the paper's claims (DESIGN.md sections 1, 3, 4): proxy vs
  bytes and its trend with size, transfer (raw-only minus proxy-bpe), gzip, pairing, ids vs
  ids-as-bytes, the stability order, alignment (does a compressed view in context lower the
  BPB of its raw bytes, from the translation probe). Each says what was measured and whether the claim holds.
- Learning curves: held-out BPB at each curve checkpoint against training FLOPs and against the
  raw bytes trained on by then (seeds averaged point by point), as plots and, for bytes,
  proxy-bpe and raw-only, a table.
- Cost: each row's training wall time and evaluation time (the scoring time of every curve
  point, code set and probe, cached scores included).
- Plots: raw BPB against training FLOPs and against raw bytes seen, for every arm and size
  (seeds averaged), final BPB against model size, stability bars, translation bars.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from proxylm.io import atomic_write_json, atomic_write_text
from proxylm.study.arms import ARMS
from proxylm.study.config import Arm, Proxy, SizeConfig, StudyConfig
from proxylm.study.figures import write_figures
from proxylm.study.rows import (
    STDLIB,
    Difference,
    Row,
    alignment,
    bpb_path,
    held_out_sets,
    mean_curve,
    paired,
    title,
)
from proxylm.study.run import data_dir, read_stability
from proxylm.study.trials import RESULT_FILE, read_json

PAPER_NEURAL_RATIO_BITS = 2.6  # the paper's neural proxy: 16-bit windows under a 40M-parameter byte LM
SPLIT_WORDS = {"val": "held-out pieces", "train": "training pieces"}
COMPRESSION_FILE = "compression.json"  # in the results_dir: each proxy's measured compression, by proxy


def load_results(cfg: StudyConfig) -> list[dict[str, Any]]:
    """Every trial result under `out`, plus those only the results_dir keeps (a fresh checkout)."""
    found = [r for path in sorted(Path(cfg.out).glob(f"trials/*/*/*/{RESULT_FILE}")) if (r := read_json(path)) is not None]
    if cfg.results_dir:
        have = {r["trial"] for r in found}
        kept = (read_json(path) for path in sorted(Path(cfg.results_dir).glob("*/*/seed-*.json")))
        found += [r for r in kept if r is not None and r["trial"] not in have]
    return found


def group_rows(cfg: StudyConfig, results: list[dict[str, Any]]) -> list[Row]:
    """Rows in the config's size order and the registry's arm order."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        by_key.setdefault((r["size"], r["arm"]), []).append(r)
    sizes = [s.label for s in cfg.sizes] + sorted({r["size"] for r in results} - {s.label for s in cfg.sizes})
    return [Row(size, arm, by_key[(size, arm.value)]) for size in sizes for arm in ARMS if (size, arm.value) in by_key]


def write_report(cfg: StudyConfig) -> dict[str, Any]:
    """Write results.json, RESULTS.md and the figures under cfg.out (and cfg.report_md); returns the summary."""
    out = Path(cfg.out)
    rows = group_rows(cfg, load_results(cfg))
    stability = read_stability(cfg)
    findings = compute_findings(rows, stability)
    targets = [(out / "RESULTS.md", out / "figures")]
    if cfg.report_md:
        md = Path(cfg.report_md)
        targets.append((md, md.parent / "results"))
    compression = compressions(cfg, used_proxies(rows))
    for md_path, fig_dir in targets:
        figures = write_figures(rows, stability, fig_dir)
        atomic_write_text(md_path, markdown(cfg, rows, stability, findings, figures, md_path.parent, compression))
    summary = {
        "rows": [row.summary() for row in rows],
        "findings": findings,
        "compression": {proxy.value: found for proxy, found in compression.items()},
        "stability": stability,
        "trials": [r for row in rows for r in row.results],
    }
    atomic_write_json(out / "results.json", summary)
    return summary


# ---- findings ------------------------------------------------------------------------------------


def paired_difference(a: Row, b: Row, held_out: str = STDLIB) -> Difference:
    """a minus b on `held_out`, over the seeds both rows have a score for."""
    return paired(a.by_seed(*bpb_path(held_out)), b.by_seed(*bpb_path(held_out)))


def verdict(d: Difference, expected_sign: int) -> str:
    """'holds', 'does not hold' or why not decided, for a claim that the difference has `expected_sign`."""
    if d.mean is None:
        return "not compared (no seed in common)"
    agrees = d.mean * expected_sign > 0
    if d.se is None:
        return ("agrees" if agrees else "disagrees") + ", one common seed: no spread measured"
    if not d.resolved:
        return "not resolved (within 2 standard errors)"
    return "holds" if agrees else "does not hold"


def measured_only(d: Difference) -> str:
    """For a comparison the paper gives no figure for: which arm is better, and whether that is resolved."""
    if d.mean is None:
        return "not compared (no seed in common)"
    better = "first better" if d.mean < 0 else "second better"
    if d.se is None:
        return f"{better}, one common seed: no spread measured"
    return f"{better}, resolved" if d.resolved else "not resolved (within 2 standard errors)"


def compare_text(a: Row, b: Row, d: Difference) -> str:
    if d.mean is None:
        return f"{a.arm.value} seeds {sorted(a.by_seed('bpb'))} vs {b.arm.value} seeds {sorted(b.by_seed('bpb'))}: no seed in common"
    return f"{a.arm.value} {d.mean_a:.4f} vs {b.arm.value} {d.mean_b:.4f}: {d.text(' BPB')}"


def compute_findings(rows: list[Row], stability: dict[str, Any] | None) -> list[dict[str, str]]:
    table = {(row.size, row.arm): row for row in rows}
    sizes = list(dict.fromkeys(row.size for row in rows))
    sets = held_out_sets(rows)
    found: list[dict[str, str]] = []

    def claim(a: Arm, b: Arm, paper: str, expected_sign: int | None) -> None:
        """Paper says BPB(a) - BPB(b) has `expected_sign` (negative: a is better); None: no published figure."""
        for size in sizes:
            if (size, a) not in table or (size, b) not in table:
                continue
            x, y = table[(size, a)], table[(size, b)]
            for held_out in sets:
                if not x.values(*bpb_path(held_out)) or not y.values(*bpb_path(held_out)):
                    continue
                d = paired_difference(x, y, held_out)
                judged = verdict(d, expected_sign) if expected_sign else measured_only(d)
                found.append({"paper": paper, "size": size, "held_out": held_out, "measured": compare_text(x, y, d), "verdict": judged})

    claim(Arm.PROXY_BPE, Arm.BYTES, "small models: proxies below bytes at 0.5B (they beat bytes from 1.5B up)", +1)
    claim(Arm.TOKEN_BPE, Arm.BYTES, "the tokenizer model beats the byte model (the paper: at a fixed symbol budget; here FLOP-matched)", -1)
    claim(Arm.RAW_ONLY, Arm.PROXY_BPE, "compressed views transfer to raw bytes: raw-only is worse than proxy-bpe", +1)
    claim(Arm.BYTES_RAW_ONLY_BUDGET, Arm.PROXY_BPE,
          "compressed views transfer: proxy-bpe beats a byte model given raw-only's compute (the paper's control is raw-only alone)", +1)
    claim(Arm.RAW_ONLY, Arm.BYTES_RAW_ONLY_BUDGET, "raw-only vs bytes at the same FLOPs (its documents and lr, not its compute): no published figure", None)
    claim(Arm.PROXY_GZIP, Arm.BYTES, "gzip never transfers: below the byte baseline at every rate", +1)
    claim(Arm.PROXY_BPE_BYTES, Arm.PROXY_BPE, "BPE ids beat BPE ids written as bytes", +1)
    claim(Arm.NO_PAIRING, Arm.PROXY_BPE, "warm-up-only pairing beats no pairing (1.5B: 20.7 vs 17.0 pass@1)", +1)
    claim(Arm.PAIRING_ALWAYS, Arm.PROXY_BPE, "warm-up-only pairing beats always-on pairing (20.7 vs 17.0)", +1)
    claim(Arm.PROXY_BPE_BYTES_GRAY, Arm.PROXY_BPE_BYTES, "Gray-code order vs id order of the id bytes: no published figure", None)
    claim(Arm.PROXY_NEURAL, Arm.PROXY_BPE, "neural vs tokenizer proxy: no consistent order across sizes", None)
    claim(Arm.PROXY_BPE_P05, Arm.PROXY_BPE, "compressed rate 0.5 vs 0.9: no published rate sweep", None)
    claim(Arm.PROXY_BPE_COOLDOWN, Arm.PROXY_BPE, "raw cool-down (p to 0 over the last 30%): the decay phase is unused in the paper", None)
    for held_out in sets:
        found.extend(scale_trend(table, sizes, held_out))
    found.extend(alignment_finding(row) for row in rows  # raw-only, the control, never saw a compressed view
                 if ARMS[row.arm].translation_probe and row.arm is not Arm.RAW_ONLY and row.by_seed("translation", "raw_bpb"))
    if stability and len({r["proxy"] for r in stability.get("rows", [])} & {"bpe", "neural", "gzip"}) > 1:
        found.append(stability_finding(stability))
    return found


def scale_trend(table: dict[tuple[str, Arm], Row], sizes: list[str], held_out: str = STDLIB) -> list[dict[str, str]]:
    """Does the proxy-bpe minus bytes gap shrink as the model grows, and is that the proxy getting
    better rather than the byte baseline getting worse (an undertrained larger model)? Each size's
    gap is paired by seed; a change between sizes counts when it exceeds two standard errors
    (the sizes' errors combined as independent)."""
    points = sorted((table[(s, Arm.BYTES)].params or 0.0, s, paired_difference(table[(s, Arm.PROXY_BPE)], table[(s, Arm.BYTES)], held_out))
                    for s in sizes if (s, Arm.PROXY_BPE) in table and (s, Arm.BYTES) in table)
    points = [(size, gap) for _, size, gap in points if gap.mean is not None]
    if len(points) < 2:
        return []
    steps = [gap_change(earlier, later) for (_, earlier), (_, later) in zip(points, points[1:])]
    by_size = ", ".join(f"{size} {gap.mean_a:.3f} vs {gap.mean_b:.3f} ({gap.text()})" for size, gap in points)
    changes = "; ".join(f"{a} -> {b} {change:+.4f}" + (f" ± {se:.4f}" if se is not None else "")
                        for (a, _), (b, _), (change, se) in zip(points, points[1:], steps))
    bytes_improve = all(later.mean_b < earlier.mean_b for (_, earlier), (_, later) in zip(points, points[1:]))
    if any(se is None for _, se in steps):
        judged = ("gap shrinks" if all(change < 0 for change, _ in steps) else "gap does not shrink") + " with size; one common seed: no spread measured"
    elif any(change > 2 * se for change, se in steps):
        judged = "disagrees (the gap grows with size, beyond 2 standard errors)"
    elif not all(change < -2 * se for change, se in steps):
        judged = "not resolved (a change of the gap between sizes is within 2 standard errors)"
    elif bytes_improve:
        judged = "agrees (the gap shrinks with size while both arms improve)"
    else:
        judged = "gap shrinks, but partly because the byte baseline gets no better with size at this budget (undertrained larger models)"
    return [{"paper": "the proxy's advantage over bytes grows with model size", "size": "all", "held_out": held_out,
             "measured": f"proxy-bpe vs bytes by size, small to large: {by_size}; change of the gap: {changes}", "verdict": judged}]


def alignment_finding(row: Row) -> dict[str, str]:
    """Does the compressed view in context help predict the raw bytes (the translation probe's
    teacher-forced BPB given the compressed view against the plain raw-view BPB, paired by seed)?"""
    diff = alignment(row)
    if diff.se is None:
        judged = ("helps" if diff.mean < 0 else "does not help") + ", one seed: no spread measured"
    elif not diff.resolved:
        judged = "not resolved (within 2 standard errors)"
    else:
        judged = "holds (the view lowers the bytes' BPB)" if diff.mean < 0 else "does not hold (the bytes cost more after their compressed view)"
    return {"paper": "the model aligns the views: a compressed view in context lowers the BPB of its raw bytes",
            "size": row.size, "held_out": "translation",
            "measured": f"{row.arm.value}: {diff.mean_a:.4f} given the compressed view vs {diff.mean_b:.4f} without: {diff.text(' BPB')}",
            "verdict": judged}


def gap_change(earlier: Difference, later: Difference) -> tuple[float, float | None]:
    """How much a paired gap moves from one size to the next, and its standard error."""
    se = math.hypot(earlier.se, later.se) if earlier.se is not None and later.se is not None else None
    return later.mean - earlier.mean, se


def stability_finding(stability: dict[str, Any]) -> dict[str, str]:
    distance = {row["proxy"]: row["distance"] for row in stability["rows"]}
    order = [p for p in ("bpe", "neural", "gzip") if p in distance]
    measured = ", ".join(f"{p} {distance[p]:.3f}" for p in sorted(distance, key=distance.get))
    agrees = all(distance[a] < distance[b] for a, b in zip(order, order[1:]))
    return {"paper": "stability: tokenizer most stable, neural next, gzip least", "size": "-", "held_out": "-",
            "measured": f"normalised Levenshtein (lower = more stable): {measured}",
            "verdict": ("agrees" if agrees else "disagrees") + f" (order of {', '.join(order)})"}


# ---- Markdown ------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(cfg: StudyConfig, rows: list[Row], stability: dict[str, Any] | None, findings: list[dict[str, str]],
             figures: dict[str, Path], base: Path, compression: dict[Proxy, dict[str, Any] | None]) -> str:
    lines = ["# Compute-matched study", ""]
    if cfg.command:
        lines += ["Command:", "", f"    {cfg.command}", ""]
    lines += status_lines(cfg, rows)
    lines += scope_lines(rows)
    lines += setup_lines(cfg, rows, compression)
    lines += bpb_lines(rows)
    lines += code_lines(rows)
    lines += curve_lines(rows)
    if findings:
        lines += ["## Findings against the paper", "",
                  "The paper's claims are about pass@1 on HumanEval+ / MBPP+ of 0.5B-14B models trained on 100B symbols; "
                  "here the measure is raw BPB on each held-out set at the sizes and budgets above, so a verdict says whether "
                  "the same ordering shows at this scale. Differences are paired by seed (the arms share each seed's data "
                  "order): mean of BPB_a(s) - BPB_b(s) over the seeds both arms have ± its standard error sd/sqrt(n). "
                  "A difference is resolved when it exceeds two standard errors; with fewer than two common seeds no "
                  "spread is measured. The trend with size compares each size's paired gap with the next size's, "
                  "their standard errors combined as independent.", "",
                  "| paper | size | held out | measured here | verdict |", "|---|---|---|---|---|"]
        lines += [f"| {f['paper']} | {f['size']} | {title(f['held_out'])} | {f['measured']} | {f['verdict']} |" for f in findings]
        lines.append("")
    lines += translation_lines(rows)
    lines += stability_lines(stability)
    if figures:
        lines += ["## Figures", ""]
        for name, path in figures.items():
            lines += [f"![{name}]({relative(path, base)})", ""]
    return "\n".join(lines)


def relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def status_lines(cfg: StudyConfig, rows: list[Row]) -> list[str]:
    """How much of the configured study the results cover, and what it cost."""
    from proxylm.study.trials import trials

    done = {r["trial"] for row in rows for r in row.results}
    planned = trials(dataclasses.replace(cfg, only_sizes=None, only_seeds=None))
    missing = [t for t in planned if t.key not in done]
    train_s = sum(row.train_wall_s * row.n for row in rows if row.train_wall_s)
    eval_s = sum(row.eval_s * row.n for row in rows if row.eval_s)
    status = "complete" if not missing else f"partial: {len(planned) - len(missing)} of {len(planned)} configured trials evaluated"
    lines = [f"Status: {status}. Wall time of the evaluated trials: {train_s / 3600:.2f} h training, {eval_s / 3600:.2f} h evaluation.", ""]
    if missing:
        lines += [f"Not run yet: {', '.join(t.key for t in missing)}.", ""]
        estimates = [estimated_wall_s(t.size, t.arm, cfg, rows) for t in missing]
        known = [s for s in estimates if s is not None]
        if known:
            unknown = f"; {len(estimates) - len(known)} more with no measured arm to go by" if len(known) < len(estimates) else ""
            lines += [f"Estimated wall time of the missing trials on this machine: ~{sum(known) / 3600:.1f} h for "
                      f"{len(known)} (each the same arm's mean measured training and evaluation time, scaled by the "
                      f"training budget where only another size has been run, else its size's mean){unknown}.", ""]
    return lines


def estimated_wall_s(size: SizeConfig, arm: Arm, cfg: StudyConfig, rows: list[Row]) -> float | None:
    """Training + evaluation seconds a trial should take, from the kept trials' wall times."""
    def wall(row: Row) -> float | None:
        return row.train_wall_s + (row.eval_s or 0.0) if row.train_wall_s else None

    budgets = {s.label: s.flops for s in cfg.sizes}
    same_arm = [(row, w) for row in rows if row.arm is arm and (w := wall(row)) is not None]
    exact = [w for row, w in same_arm if row.size == size.label]
    if exact:
        return exact[0]
    scaled = [w * size.flops / budgets[row.size] for row, w in same_arm if size.flops and budgets.get(row.size)]
    if scaled:
        return sum(scaled) / len(scaled)
    same_size = [w for row in rows if row.size == size.label and (w := wall(row)) is not None]
    return sum(same_size) / len(same_size) if same_size else None


def scope_lines(rows: list[Row]) -> list[str]:
    """How far this study is from the paper's scale, in parameters and training symbols."""
    if not rows:
        return []
    params = [row.params for row in rows if row.params]
    symbols = [row.mean("train", "symbols") for row in rows if row.arm is not Arm.RAW_ONLY]
    if not params or not symbols:
        return []
    return [f"Scope: models of {min(params):,.0f} to {max(params):,.0f} non-embedding parameters, each arm trained on "
            f"{min(symbols):,.0f} to {max(symbols):,.0f} positions; the paper's models have 0.5B-14B parameters and "
            f"train on 100B symbols, {math.log10(5e8 / max(params)):.1f}+ orders of magnitude larger in parameters and "
            f"{math.log10(1e11 / max(symbols)):.1f}+ in data.", ""]


def setup_lines(cfg: StudyConfig, rows: list[Row], compression: dict[Proxy, dict[str, Any] | None]) -> list[str]:
    t = cfg.train
    held_out = next((row.results[0]["eval"] for row in rows if row.results), None)
    lines = ["## Setup", "",
             f"- Corpus: `{cfg.data.corpus}`" + (f", training on its first {cfg.data.limit} documents" if cfg.data.limit else "")
             + f"; held out: the whole corpus's val split ({cfg.data.val_fraction:.0%} of documents by id hash), never trained on.",
             f"- Evaluation: {cfg.eval.docs} held-out documents, each cut to {cfg.eval.max_doc_bytes} bytes"
             + (f" ({held_out['documents']} documents, {held_out['raw_bytes']:,} bytes scored)" if held_out else "")
             + f"; window {cfg.eval.context or t.pack.seq_len}; the same bytes for every arm.",
             f"- Shared training settings: seq_len {t.pack.seq_len}, batch {t.pack.batch_size} x grad_accum {t.run.grad_accum}, "
             f"lr {t.optim.lr:g}, warm-up {t.optim.warmup_steps} steps, cosine to {t.optim.min_lr_ratio:g}x, "
             f"weight decay {t.optim.weight_decay:g}, run.dtype {t.run.dtype.value}, heads {t.model.n_main_heads or 1} main + {t.model.n_raw_heads or 0} raw.",
             f"- Compressors: {compressor_text(cfg, compression)}.",
             *position_cost_lines(rows),
             *precision_lines(rows), "",
             "| size | preset | non-embedding params (all heads; byte model to largest vocabulary) | budget per arm | seeds | arms |", "|---|---|---|---|---|---|"]
    for size in cfg.sizes:
        counts = [row.params for row in rows if row.size == size.label and row.params]
        params = "–" if not counts else f"{min(counts):,.0f}" + (f"–{max(counts):,.0f}" if max(counts) > min(counts) else "")
        budget = f"{size.flops:.3g} FLOPs" if size.flops else f"{size.symbols:,} symbols"
        arms = ", ".join(a.value for a in (size.arms or cfg.arms))
        lines.append(f"| {size.label} | {size.preset} | {params} | {budget} | {seeds_text(size.seeds or cfg.seeds, size.extra_seeds)} | {arms} |")
    return lines + [""]


def precision_lines(rows: list[Row]) -> list[str]:
    """Where and in what precision the trials trained (each trial's resolved run.dtype and machine,
    as its training recorded them): wall times and BPB compare across trials only within a group."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in (r for row in rows for r in row.results):
        train = r.get("train") or {}
        groups.setdefault((train.get("dtype", "precision not recorded"), train.get("machine", "machine not recorded")), []).append(r["trial"])
    if len(groups) <= 1:
        return [f"- Trained in {dtype} on {where} (every trial)." for dtype, where in groups]
    parts = [f"{dtype} on {where}: " + (", ".join(keys) if len(keys) <= 3 else f"{len(keys)} trials")
             for (dtype, where), keys in sorted(groups.items(), key=lambda item: -len(item[1]))]
    return ["- Trained in (each trial's resolved `run.dtype`, its machine): " + "; ".join(parts) + "."]


def seeds_text(seeds: list[int], extra: dict[str, list[int]]) -> str:
    """E.g. '[0, 1]; also [2] for bytes, proxy-bpe'."""
    by_seeds: dict[str, list[str]] = {}
    for arm, more in extra.items():
        by_seeds.setdefault(str(more), []).append(arm)
    return "; ".join([str(seeds), *(f"also {more} for {', '.join(arms)}" for more, arms in by_seeds.items())])


def flops_per_position(row: Row) -> float | None:
    flops, symbols = row.mean("train", "flops"), row.mean("train", "symbols")
    return flops / symbols if flops and symbols else None


def position_cost_lines(rows: list[Row]) -> list[str]:
    """Per size, each arm's training FLOPs per position relative to the byte baseline's: an arm
    whose vocabulary is larger (the token ids, 16-bit neural windows) pays more per position, so
    at the same FLOPs it trains on proportionally fewer positions."""
    lines = []
    for size in dict.fromkeys(row.size for row in rows):
        costs = {row.arm: c for row in rows if row.size == size and (c := flops_per_position(row))}
        base = costs.get(Arm.BYTES)
        if base is None or len(costs) < 2:
            continue
        ratios = ", ".join(f"{arm.value} {cost / base:.2f}x" for arm, cost in costs.items() if arm is not Arm.BYTES)
        lines.append(f"- FLOPs per position at {size}, relative to bytes ({base:.3g}): {ratios}; "
                     "at equal FLOPs an arm trains on that many times fewer positions.")
    return lines


def used_proxies(rows: list[Row]) -> list[Proxy]:
    return list(dict.fromkeys(ARMS[row.arm].proxy for row in rows)) or [Proxy.BPE]


def compression(directory: Path) -> dict[str, Any] | None:
    """A prepared proxy's compressor spec, shards fingerprint, symbol width and, per split, bytes per
    symbol and the ratio in bits (raw bits / symbol bits); None where it is not prepared."""
    from proxylm.data.shards import ShardsError, read_manifest

    try:
        manifest = read_manifest(directory)
    except ShardsError:
        return None
    bits = math.log2(manifest["compressor"]["alphabet_size"])
    splits = {name: {"bytes_per_symbol": s["raw_bytes"] / s["symbols"], "ratio_bits": 8 * s["raw_bytes"] / (bits * s["symbols"])}
              for name, s in manifest["splits"].items() if s["symbols"]}
    return {"spec": manifest["compressor"]["spec"], "fingerprint": manifest.get("fingerprint"), "bits_per_symbol": bits, **splits}


def compressions(cfg: StudyConfig, proxies: list[Proxy]) -> dict[Proxy, dict[str, Any] | None]:
    """Each proxy's compression, measured on its prepared shards or, where they are not here (a
    report rebuilt from kept results), as the results_dir kept it for the same compressor spec.
    Measurements are kept there for the next such rebuild."""
    kept_path = Path(cfg.results_dir) / COMPRESSION_FILE if cfg.results_dir else None
    kept = (read_json(kept_path) if kept_path else None) or {}
    found: dict[Proxy, dict[str, Any] | None] = {}
    for proxy in proxies:
        measured = compression(data_dir(cfg) / proxy.value)
        earlier = kept.get(proxy.value)
        if measured is None and earlier is not None and earlier.get("spec") == cfg.compressors.spec(proxy):
            measured = earlier
        found[proxy] = measured
    updated = {**kept, **{proxy.value: m for proxy, m in found.items() if m is not None}}
    if kept_path and updated != kept:
        atomic_write_json(kept_path, updated)
    return found


def compression_text(found: dict[str, Any] | None, proxy: Proxy) -> str:
    """E.g. '4.93 bytes per 16-bit symbol, 2.47x in bits on held-out pieces (2.61x on training pieces)'."""
    if found is None or not ({"val", "train"} & found.keys()):
        return "compression not measured (not prepared here)"
    first = "val" if "val" in found else "train"
    text = (f"{found[first]['bytes_per_symbol']:.2f} bytes per {found['bits_per_symbol']:g}-bit symbol, "
            f"{found[first]['ratio_bits']:.2f}x in bits on {SPLIT_WORDS[first]}")
    if first == "val" and "train" in found:
        text += f" ({found['train']['ratio_bits']:.2f}x on {SPLIT_WORDS['train']})"
    if proxy is Proxy.NEURAL:
        text += f"; the paper's 40M-parameter byte LM: ~{PAPER_NEURAL_RATIO_BITS}x"
    return text


def compressor_text(cfg: StudyConfig, compression: dict[Proxy, dict[str, Any] | None]) -> str:
    parts = []
    for proxy, found in compression.items():
        details = [compression_text(found, proxy)]
        if proxy is Proxy.NEURAL:
            details.insert(0, f"byte LM: {byte_lm_text(cfg)}")
        parts.append(f"{proxy.value} `{cfg.compressors.spec(proxy)}` ({'; '.join(details)})")
    return ", ".join(parts)


def byte_lm_text(cfg: StudyConfig) -> str:
    lm = cfg.neural_lm
    if lm.model is not None:
        return lm.model
    shape = "".join(f", {key} {value}" for key, value in lm.shape.items())
    return f"{lm.preset} preset{shape}, {lm.steps} steps of {lm.batch_size} x {lm.seq_len} positions of `<bos>` + coder-row chunks"


def bpb_lines(rows: list[Row]) -> list[str]:
    lines = ["## Raw bits per byte on the held-out documents", "",
             "BPB mean ± sample std over seeds [min, max]; Δ bytes is the difference to the byte baseline of the same size "
             "(negative: better), paired by seed, ± its standard error. Train FLOPs are the trainer's count (6N + attention "
             "per position). Wall times are per seed: training (the whole training call) and evaluation (scoring every "
             "curve point, code set and probe).", ""]
    for size in dict.fromkeys(row.size for row in rows):
        size_rows = [row for row in rows if row.size == size]
        bytes_row = next((row for row in size_rows if row.arm is Arm.BYTES), None)
        lines += [f"### {size}", "",
                  "| arm | what | seeds | steps | train FLOPs | positions | raw bytes in raw views | BPB | Δ bytes | train wall s | eval s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in size_rows:
            s = row.summary()
            std = f" ± {s['bpb_std']:.4f}" if s["bpb_std"] is not None else ""
            lines.append(
                f"| {row.arm.value} | {ARMS[row.arm].about} | {row.n} | {s['steps']:.0f} | {s['flops']:.3g} | {s['symbols']:,.0f} | "
                f"{s['raw_bytes']:,.0f} | {s['bpb_mean']:.4f}{std} [{s['bpb_min']:.4f}, {s['bpb_max']:.4f}] | "
                f"{delta_to_bytes(row, bytes_row, STDLIB)} | {fmt(row.train_wall_s, '.0f')} | {fmt(row.eval_s, '.0f')} |"
            )
        lines.append("")
    return lines


def delta_to_bytes(row: Row, bytes_row: Row | None, held_out: str) -> str:
    if bytes_row is None or row is bytes_row:
        return "–"
    return paired_difference(row, bytes_row, held_out).text()


def code_lines(rows: list[Row]) -> list[str]:
    """Raw BPB on the real-code sets, one column pair per set."""
    sets = held_out_sets(rows)[1:]
    if not sets:
        return []
    about = []
    for name in sets:
        scored = {(r["code"][name]["documents"], r["code"][name]["raw_bytes"]) for row in rows for r in row.results if name in (r.get("code") or {})}
        counts = "; ".join(f"{documents} programs, {raw_bytes:,} bytes" for documents, raw_bytes in sorted(scored))
        mixed = " — results scored on different programs: re-evaluate them under one setting" if len(scored) > 1 else ""
        about.append(f"{title(name)} ({counts}{mixed})")
    lines = ["## Raw bits per byte on real code", "",
             f"The reference programs (prompt + canonical solution, whole) of {', '.join(about)}: code no arm trains on, "
             "scored at each trial's final checkpoint. BPB mean ± sample std over seeds; Δ bytes as above (paired by seed).", ""]
    header = "".join(f" {title(name)} BPB | Δ bytes |" for name in sets)
    for size in dict.fromkeys(row.size for row in rows):
        size_rows = [row for row in rows if row.size == size]
        bytes_row = next((row for row in size_rows if row.arm is Arm.BYTES), None)
        lines += [f"### {size}", "", f"| arm | seeds | stdlib BPB |{header}", "|---|---|---|" + "---|---|" * len(sets)]
        for row in size_rows:
            cells = "".join(f" {mean_std(row, name)} | {delta_to_bytes(row, bytes_row, name)} |" for name in sets)
            lines.append(f"| {row.arm.value} | {row.n} | {mean_std(row, STDLIB)} |{cells}")
        lines.append("")
    return lines


def mean_std(row: Row, held_out: str) -> str:
    mean, std = row.mean(*bpb_path(held_out)), row.std(*bpb_path(held_out))
    return fmt(mean) + (f" ± {std:.4f}" if std is not None else "")


CURVE_TABLE_ARMS = (Arm.BYTES, Arm.PROXY_BPE, Arm.RAW_ONLY)


def curve_lines(rows: list[Row]) -> list[str]:
    """Held-out BPB at each curve point of bytes, proxy-bpe and raw-only, with the FLOPs and raw bytes trained on by then."""
    shown = [row for row in rows if row.arm in CURVE_TABLE_ARMS and mean_curve(row).bpb]
    if not shown:
        return []
    lines = ["## Learning curves", "",
             "Held-out (stdlib) BPB at each curve checkpoint, with the training FLOPs and the raw bytes (bytes in raw views) "
             "trained on by then; seeds averaged point by point.", ""]
    for size in dict.fromkeys(row.size for row in shown):
        lines += [f"### {size}", "", "| arm | point | step | train FLOPs | raw bytes seen | BPB |", "|---|---|---|---|---|---|"]
        for row in (r for r in shown if r.size == size):
            curve = mean_curve(row)
            for i, (step, flops, raw, bpb) in enumerate(zip(curve.steps, curve.flops, curve.raw_bytes, curve.bpb), start=1):
                lines.append(f"| {row.arm.value} | {i} | {fmt(step, '.0f')} | {fmt(flops, '.3g')} | {fmt(raw, ',.0f')} | {bpb:.4f} |")
        lines.append("")
    return lines


def translation_lines(rows: list[Row]) -> list[str]:
    probed = [row for row in rows if row.values("translation", "byte_accuracy")]
    if not probed:
        return []
    lines = ["## Translation probe", "",
             "Compressed view in context, greedy raw bytes out (and the reverse); teacher-forced BPB of the raw bytes given the "
             "compressed view beside the plain raw-view BPB of the same cropped documents; written: the share of the reference "
             "the model wrote before closing the raw view (trials evaluated before this was recorded show –). Byte accuracy "
             "compares position by position, so bytes any Python module shares (indentation, keywords) score without "
             "reading the compressed view: raw-only, which never trained on one, is its floor, and only accuracy above "
             "it shows the view was read. Means over seeds.", "",
             "| size | arm | exact match | byte accuracy | written | BPB given compressed | raw BPB | reverse accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for row in probed:
        lines.append(
            f"| {row.size} | {row.arm.value} | {fmt(row.mean('translation', 'exact_match'), '.3f')} | "
            f"{fmt(row.mean('translation', 'byte_accuracy'), '.3f')} | {fmt(row.mean('translation', 'compressed_to_raw', 'written'), '.3f')} | "
            f"{fmt(row.mean('translation', 'bpb_given_compressed'))} | "
            f"{fmt(row.mean('translation', 'raw_bpb'))} | {fmt(row.mean('translation', 'raw_to_compressed', 'accuracy'), '.3f')} |"
        )
    return lines + [""]


def stability_lines(stability: dict[str, Any] | None) -> list[str]:
    if not stability or not stability.get("rows"):
        return []
    lines = ["## Stability of the proxies", "",
             f"{stability['metric']}, {stability['docs']} held-out documents (lower = more stable).", "",
             "| proxy | spec | distance | ± std | ratio (bytes/symbol) |", "|---|---|---|---|---|"]
    for row in sorted(stability["rows"], key=lambda r: r["distance"]):
        lines.append(f"| {row['proxy']} | `{row['compressor']}` | {row['distance']:.4f} | {row['std']:.4f} | {row['ratio']:.2f} |")
    return lines + [""]
