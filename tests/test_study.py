"""The compute-matched study: arms differ only in data and schedule, a tiny study runs end to end
(held-out stdlib and real code scored, curve points with the raw bytes seen), a rerun retrains
nothing, a changed config is refused, bad configs fail with their key; the report pairs
differences by seed and shows code sets, learning curves and wall times."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from proxylm.data.shards import Shards
from conftest import write_stdlib_jsonl

from proxylm.cli import main
from proxylm.config import ConfigError, to_dict
from proxylm.data.mixer import Mode
from proxylm.data.schedule import Schedule, proxy_default
from proxylm.errors import UserError
from proxylm import study
from proxylm.study import ARMS, Arm, ArmContext, CompressorSpecs, Proxy, load_study_config, pin_schedule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ARMS_UNDER_TEST = ["bytes", "proxy-bpe", "raw-only", "bytes-raw-only-budget"]
STUDY = """
out: {out}
arms: [{arms}]
seeds: [0]
sizes:
  - {{name: micro, preset: small, model: {{dim: 32, n_layers: 1, n_heads: 2}}, flops: 3.0e+8}}
data: {{corpus: {corpus}, val_fraction: 0.1, fit_bytes: 200000, max_piece_bytes: 768}}
compressors: {{bpe: "bpe:vocab=300"}}
train:
  pack: {{seq_len: 64, batch_size: 2}}
  optim: {{lr: 3.0e-3, warmup_steps: 2}}
  run: {{log_every: 1, peak_flops: 1.0e+11, plot: false, dtype: fp32}}
eval: {{docs: 4, max_doc_bytes: 256, curve_points: 2, translate_docs: 2, translate_max_bytes: 24, stability_docs: 4,
        code_sets: [humaneval, "mbpp:{mbpp}"], code_docs: 2}}
"""
MBPP_ROWS = [  # MBPP's format: task numbers 11-510 are its test split, 1-10 its few-shot prompts
    {"task_id": f"MBPP/{n}", "prompt": f'def {name}(xs):\n    """{doc}"""\n', "canonical_solution": f"    return {body}\n",
     "test": f"def check(f):\n    assert f([1, 2]) == {value}\n", "entry_point": name}
    for n, name, doc, body, value in [(3, "first", "The first item.", "xs[0]", 1), (11, "total", "Sum of the items.", "sum(xs)", 3),
                                      (12, "largest", "The largest item.", "max(xs)", 2), (13, "count", "How many.", "len(xs)", 2)]
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Sixty standard-library modules (the first 2 kB of each) as JSONL."""
    return write_stdlib_jsonl(tmp_path_factory.mktemp("corpus") / "docs.jsonl", files=60, chars=2000)


@pytest.fixture(scope="module")
def mbpp(tmp_path_factory):
    """A four-problem MBPP file (one outside the test split)."""
    path = tmp_path_factory.mktemp("mbpp") / "mbpp.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in MBPP_ROWS))
    return path


def write_config(directory: Path, corpus: Path, mbpp: Path, arms=ARMS_UNDER_TEST) -> Path:
    path = directory / "study.yaml"
    path.write_text(STUDY.format(out=directory / "out", corpus=corpus, mbpp=mbpp, arms=", ".join(arms)))
    return path


def base_and_context():
    cfg = load_study_config(None, ["sizes=[{preset: small, flops: 1.0e+9}]", "train.run.max_steps=5"])
    ctx = ArmContext(shards={p: Path(f"/data/{p.value}") for p in Proxy}, specs=CompressorSpecs())
    return cfg.train, ctx


def without_arm_keys(cfg) -> dict:
    """A training config without what an arm may change: data, schedule and the raw-only switch."""
    data = to_dict(cfg)
    for key in ("data", "schedule"):
        data.pop(key)
    data["mix"].pop("drop_compressed")
    return data


@pytest.mark.parametrize("arm", [a for a in Arm if a not in (Arm.RAW_ONLY, Arm.BYTES_RAW_ONLY_BUDGET)])
def test_an_arm_changes_only_its_data_and_schedule(arm):
    base, ctx = base_and_context()
    derived = ARMS[arm].build(base, ctx)
    assert without_arm_keys(derived) == without_arm_keys(base)
    assert derived.data.shards == str(ctx.shards[ARMS[arm].proxy])
    assert derived.data.compressor == ctx.specs.spec(ARMS[arm].proxy)


def test_arm_schedules_are_what_their_names_say():
    base, ctx = base_and_context()
    total = 100

    def points(arm):
        return [Schedule(ARMS[arm].build(base, ctx).schedule, total).at(step) for step in range(total)]

    assert {p.rate for p in points(Arm.BYTES)} == {0.0} and {p.rate for p in points(Arm.TOKEN_BPE)} == {1.0}
    assert points(Arm.PROXY_BPE_P05)[-1].rate == pytest.approx(0.5)
    cooldown = points(Arm.PROXY_BPE_COOLDOWN)
    assert cooldown[60].rate == pytest.approx(0.9) and cooldown[-1].rate < 0.05
    assert [p.rate for p in points(Arm.NO_PAIRING)] == [p.rate for p in points(Arm.PROXY_BPE)]
    assert not any(p.mode.paired for p in points(Arm.NO_PAIRING))
    assert all(p.mode is Mode.TRANSLATION for p in points(Arm.PAIRING_ALWAYS))
    warmup = [p for p in points(Arm.PROXY_BPE) if p.mode.paired]
    assert len(warmup) == 20  # the paper's 20% translation warm-up


def test_a_pinned_schedule_follows_the_original_step_by_step_at_any_run_length():
    original = Schedule(proxy_default(), 50)
    pinned = pin_schedule(proxy_default(), 50)
    for run_length in (50, 13):
        replay = Schedule(pinned, run_length)
        assert [replay.at(s) for s in range(60)] == [original.at(s) for s in range(60)]


def trial_file(out: Path, arm: str, name: str) -> Path:
    return out / "trials/micro" / arm / "seed-0" / name


def metrics(out: Path, arm: str) -> list[dict]:
    lines = trial_file(out, arm, "run/metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "lr" in r]


def assert_raw_only_follows_the_proxy_lr_by_raw_bytes(out: Path) -> None:
    """Each raw-only step runs at the lr of the proxy step that reached the same raw bytes."""
    import bisect

    proxy, raw_only = metrics(out, "proxy-bpe"), metrics(out, "raw-only")
    assert [r["step"] for r in raw_only] == list(range(1, len(raw_only) + 1)) and len(raw_only) < len(proxy)
    proxy_seen = [r["raw_bytes"] for r in proxy]
    before = [0] + [r["raw_bytes"] for r in raw_only[:-1]]
    followed = [proxy[min(bisect.bisect_right(proxy_seen, b), len(proxy) - 1)]["lr"] for b in before]
    assert [r["lr"] for r in raw_only] == pytest.approx(followed)
    assert raw_only[-1]["lr"] == pytest.approx(proxy[-1]["lr"], rel=0.3)  # it ends annealed, as the proxy run does


def test_a_tiny_study_runs_in_parts_and_a_rerun_redoes_nothing(tmp_path, corpus, mbpp, monkeypatch, capsys):
    config = write_config(tmp_path, corpus, mbpp)
    out = tmp_path / "out"
    assert main(["study", str(config), "--parts", "prepare,train"]) == 0
    assert all(trial_file(out, arm, "trained.json").is_file() for arm in ARMS_UNDER_TEST)
    assert not any(trial_file(out, arm, "result.json").exists() for arm in ARMS_UNDER_TEST)

    def no_training(cfg, info):
        raise AssertionError(f"retrained {cfg.run.out}")

    monkeypatch.setattr("proxylm.study.run.train_run", no_training)
    assert main(["study", str(config)]) == 0  # every part; training is done, so only evaluation runs
    results = {arm: json.loads(trial_file(out, arm, "result.json").read_text()) for arm in ARMS_UNDER_TEST}

    budget = 3.0e8
    for arm in ("bytes", "proxy-bpe"):  # compute-matched: both stop within one step of the same FLOPs
        train = results[arm]["train"]
        assert budget - train["flops"] / train["steps"] < train["flops"] <= budget
    proxy, raw_only = results["proxy-bpe"]["train"], results["raw-only"]["train"]
    assert raw_only["flops"] < proxy["flops"]  # the control spends less compute ...
    tokens_per_batch = 64 * 2
    assert proxy["raw_bytes"] <= raw_only["raw_bytes"] <= proxy["raw_bytes"] + tokens_per_batch  # ... on the same raw views
    assert results["raw-only"]["translation"] is not None and results["bytes"]["translation"] is None
    small_bytes = results["bytes-raw-only-budget"]["train"]  # the byte baseline at raw-only's FLOPs
    assert raw_only["flops"] - small_bytes["flops"] / small_bytes["steps"] < small_bytes["flops"] <= raw_only["flops"]
    assert_raw_only_follows_the_proxy_lr_by_raw_bytes(out)
    from proxylm.evaluate.tasks import load_tasks

    programs = {"humaneval": load_tasks("humaneval", limit=2), "mbpp": load_tasks(f"mbpp:{mbpp}", limit=2)}
    assert [p.task_id for p in programs["mbpp"]] == ["MBPP/11", "MBPP/12"]  # MBPP's test split
    for r in results.values():
        assert [p["step"] for p in r["curve"]][-1] == r["train"]["steps"] and r["bpb"] == r["curve"][-1]["bpb"]
        assert r["eval"]["raw_bytes"] == results["bytes"]["eval"]["raw_bytes"] > 0  # the same held-out bytes
        assert 0 < r["bpb"] < 16
        seen = [p["raw_bytes"] for p in r["curve"]]  # raw bytes trained on by each curve point, from the checkpoints
        assert seen == sorted(seen) and seen[-1] == r["train"]["raw_bytes"] and len(seen) == 2
        for name, problems in programs.items():  # real code, whole reference programs, beside the held-out stdlib
            scored = r["code"][name]
            assert scored["documents"] == 2 and scored["raw_bytes"] == sum(len(p.reference.encode()) for p in problems)
            assert 0 < scored["bpb"] < 16
        assert r["eval_time_s"] > 0

    report = (out / "RESULTS.md").read_text()
    for arm in ARMS_UNDER_TEST:
        assert f"| {arm} |" in report
    where = study.run.machine(torch.device("cpu"))  # each trial records where and in what precision it trained
    assert {(r["train"]["dtype"], r["train"]["machine"]) for r in results.values()} == {("fp32", where)}
    assert f"- Trained in fp32 on {where} (every trial)." in report
    assert "| arm | seeds | stdlib BPB | HumanEval BPB | Δ bytes | MBPP BPB | Δ bytes |" in report
    summary = json.loads((out / "results.json").read_text())
    assert {row["arm"] for row in summary["rows"]} == set(ARMS_UNDER_TEST)
    assert {f["held_out"] for f in summary["findings"]} == {"stdlib", "humaneval", "mbpp", "translation"}  # translation: the alignment finding
    for name in ("bpb_vs_flops.png", "bpb_vs_raw_bytes.png", "stability.png", "translation.png"):
        assert (out / "figures" / name).read_bytes().startswith(PNG_MAGIC)
    stability = json.loads((out / "stability.json").read_text())
    assert [row["proxy"] for row in stability["rows"]] == ["bpe"]
    train_shards = Shards.open(out / "data/bpe", "train")
    trained_files = {train_shards.doc_id(i).split("@")[0] for i in range(len(train_shards))}
    held_out = {key.split("@")[0] for key, _ in study.run.eval_documents(load_study_config(config))}
    assert held_out and trained_files and not held_out & trained_files  # no piece of an evaluation document is trained on
    final = {arm: Path(r["train"]["checkpoint"]) for arm, r in results.items()}
    assert all(sorted(p.name for p in path.parent.glob("step-*")) == [path.name] for path in final.values())

    # A rerun trains and scores nothing and rebuilds the report from the results.
    monkeypatch.setattr("proxylm.study.run.score_trial", lambda *a: pytest.fail("re-scored a finished trial"))
    stamps = {arm: trial_file(out, arm, "result.json").stat().st_mtime_ns for arm in ARMS_UNDER_TEST}
    (out / "RESULTS.md").unlink()
    capsys.readouterr()
    assert main(["study", str(config)]) == 0
    assert capsys.readouterr().err.count("skipped") >= 2 * len(ARMS_UNDER_TEST)
    assert stamps == {arm: trial_file(out, arm, "result.json").stat().st_mtime_ns for arm in ARMS_UNDER_TEST}
    assert (out / "RESULTS.md").read_text() == report
    monkeypatch.undo()

    # An evaluation that was lost is redone from the final checkpoint and the cached scores of the
    # pruned curve checkpoints, without training again.
    monkeypatch.setattr("proxylm.study.run.train_run", no_training)
    trial_file(out, "bytes", "result.json").unlink()
    assert main(["study", str(config), "arms=[bytes]", "--parts", "evaluate"]) == 0
    redone = json.loads(trial_file(out, "bytes", "result.json").read_text())
    assert redone["train"]["steps"] == results["bytes"]["train"]["steps"] and redone["bpb"] == results["bytes"]["bpb"]
    assert redone["curve"] == results["bytes"]["curve"] and redone["code"] == results["bytes"]["code"]

    # More code programs re-score the code sets at the final checkpoint and keep the scored curve.
    monkeypatch.setattr("proxylm.study.run.score_point", lambda *a: pytest.fail("re-scored a curve point"))
    assert main(["study", str(config), "arms=[bytes]", "eval.code_docs=3", "--parts", "evaluate"]) == 0
    more = json.loads(trial_file(out, "bytes", "result.json").read_text())
    assert more["curve"] == results["bytes"]["curve"] and more["code"]["humaneval"]["documents"] == 3
    monkeypatch.undo()

    # A trial directory trained under another budget is refused, not silently mixed in.
    with pytest.raises(UserError, match=r"trials/micro/bytes/seed-0: trained under another config"):
        study.run_study(load_study_config(config, ["arms=[bytes]", "parts=[train]",
                                                   "sizes=[{name: micro, preset: small, model: {dim: 32, n_layers: 1, n_heads: 2}, flops: 4.0e+8}]"]))


def test_kept_results_let_a_fresh_checkout_skip_finished_trials_and_rebuild_the_report(tmp_path, corpus, mbpp, monkeypatch):
    config = write_config(tmp_path, corpus, mbpp, arms=["bytes"])
    kept = tmp_path / "kept"
    overrides = [f"results_dir={kept}", "parts=[prepare, train, evaluate, stability, report]"]
    study.run_study(load_study_config(config, overrides))
    result = json.loads((kept / "micro/bytes/seed-0.json").read_text())
    assert result["trial"] == "micro/bytes/seed-0" and (kept / "stability.json").is_file()

    first_fit = json.loads((tmp_path / "out/data/bpe/manifest.json").read_text())["fingerprint"]
    for gone in ("trials", "data"):  # a fresh checkout: no runs, and shards prepared afresh (a new fit)
        shutil.rmtree(tmp_path / "out" / gone)
    (tmp_path / "out" / "stability.json").unlink()
    monkeypatch.setattr("proxylm.study.run.train_run", lambda *a: pytest.fail("retrained a kept trial"))
    monkeypatch.setattr("proxylm.study.run.score_trial", lambda *a: pytest.fail("re-scored a kept trial"))
    monkeypatch.setattr("proxylm.probes.stability.measure", lambda *a, **k: pytest.fail("re-probed the compressors"))
    summary = study.run_study(load_study_config(config, overrides))
    assert summary["trials"] == [result] and summary["stability"] == json.loads((kept / "stability.json").read_text())
    measured = summary["compression"]["bpe"]
    assert measured["spec"] == "bpe:vocab=300" and measured["val"]["bytes_per_symbol"] > 1
    assert measured["fingerprint"] != first_fit  # the kept trial was skipped on other shards of the same configs

    with pytest.raises(UserError, match=r"kept/micro/bytes/seed-0.json: a kept result trained under another config"):
        study.run_study(load_study_config(config, [*overrides[:1], "parts=[train]", "train.optim.lr=1.0e-3"]))

    shutil.rmtree(tmp_path / "out" / "data")  # a report rebuilt from kept results alone still states the compression
    report_only = load_study_config(config, [*overrides[:1], "parts=[report]"])
    assert study.run_study(report_only)["compression"]["bpe"] == measured
    assert f"{measured['val']['bytes_per_symbol']:.2f} bytes per" in (tmp_path / "out" / "RESULTS.md").read_text()
    other_spec = load_study_config(config, [*overrides[:1], "parts=[report]", "compressors.bpe=bpe:vocab=280"])
    assert study.run_study(other_spec)["compression"]["bpe"] is None  # kept for another compressor: not claimed


@pytest.mark.parametrize(
    "override, message",
    [
        ("arms=[bytes, proxy-zstd]", r"'arms\[1\]' must be one of"),
        ("sizes=[{preset: tiny}]", r"give exactly one budget"),
        ("sizes=[{preset: tiny, flops: 1.0e+12, symbols: 1000}]", r"give exactly one budget"),
        ("sizes=[{preset: huge, flops: 1.0e+12}]", r"preset must be one of"),
        ("sizes=[{preset: tiny, flops: 1.0e+12, model: {dimm: 3}}]", r"unknown model key 'dimm'"),
        ("train.run.max_time_s=60", r"max_time_s would stop arms at different FLOPs"),
        ("compressors.neural=neural:model=x.pt", r"leave out model="),
        ("only_sizes=[base]", r"no size named 'base'"),
        ("only_seeds=[]", r"only_seeds must list at least one seed"),
        ("parts=[train, score]", r"'parts\[1\]' must be one of"),
        ("eval.code_sets=[humaneval, mbppp]", r"'eval.code_sets\[1\]' must be humaneval or mbpp"),
        ("eval.code_sets=[mbpp, mbpp:other.jsonl]", r"each benchmark at most once"),
        ("eval.code_docs=0", r"eval.code_docs must be >= 1"),
    ],
)
def test_bad_study_configs_name_the_key(override, message):
    overrides = [override] if override.startswith("sizes") else ["sizes=[{preset: tiny, flops: 1.0e+12}]", override]
    with pytest.raises(ConfigError, match=message):
        load_study_config(None, overrides)


def test_a_missing_code_set_file_names_the_setting(tmp_path):
    cfg = load_study_config(None, ["sizes=[{preset: tiny, flops: 1.0e+12}]", f"eval.code_sets=[humaneval, 'mbpp:{tmp_path}/none.jsonl']"])
    with pytest.raises(UserError, match=r"eval.code_sets: 'mbpp:.*none.jsonl': task file not found"):
        study.run.code_documents(cfg)


def test_the_cli_reports_config_errors_as_one_line(tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text("sizes: [{preset: tiny, flops: 1.0e+12}]\narms: [bytes, proxy-zstd]\n")
    assert main(["study", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("proxylm: error:") and "proxy-zstd" in err and len(err.strip().splitlines()) == 1


def test_trials_run_whole_seeds_in_order_with_extra_seeds_for_some_arms():
    cfg = load_study_config(None, ["arms=[bytes, proxy-bpe, raw-only]", "seeds=[0]",
                                   "sizes=[{preset: small, flops: 1.0e+12, arms: [bytes]}, "
                                   "{preset: tiny, flops: 4.0e+12, extra_seeds: {proxy-bpe: [2, 1], raw-only: [1]}}]"])
    assert [t.key for t in study.trials(cfg)] == [
        "small/bytes/seed-0",
        "tiny/bytes/seed-0", "tiny/proxy-bpe/seed-0", "tiny/raw-only/seed-0",
        "tiny/proxy-bpe/seed-1", "tiny/raw-only/seed-1",
        "tiny/proxy-bpe/seed-2",
    ]
    narrowed = load_study_config(None, ["arms=[bytes, proxy-bpe, raw-only]", "seeds=[0]", "only_seeds=[1]", "only_sizes=[tiny]",
                                        "sizes=[{preset: small, flops: 1.0e+12}, "
                                        "{preset: tiny, flops: 4.0e+12, seeds: [0, 1, 2], extra_seeds: {proxy-bpe: [3]}}]"])
    assert [t.key for t in study.trials(narrowed)] == ["tiny/bytes/seed-1", "tiny/proxy-bpe/seed-1", "tiny/raw-only/seed-1"]
    with pytest.raises(ConfigError, match=r"extra_seeds names no arm 'proxy'"):
        load_study_config(None, ["sizes=[{preset: tiny, flops: 1.0e+12, extra_seeds: {proxy: [1]}}]"])


def hand_row(arm, bpb_by_seed, code=None):
    """A row built by hand: seed -> held-out BPB, and optionally seed -> {code set: BPB}."""
    from proxylm.study.report import Row

    return Row("tiny", arm, [{"seed": s, "bpb": b, "params": 1e6, "code": {name: {"bpb": v} for name, v in (code or {}).get(s, {}).items()}}
                             for s, b in bpb_by_seed.items()])


def verdict_of(rows, paper_words, held_out="stdlib"):
    from proxylm.study.report import compute_findings

    return next(f["verdict"] for f in compute_findings(rows, None) if paper_words in f["paper"] and f["held_out"] == held_out)


def test_findings_call_a_difference_only_when_it_exceeds_the_paired_seed_spread():
    clear = [hand_row(Arm.BYTES, {0: 4.0, 1: 4.01, 2: 3.99}), hand_row(Arm.PROXY_BPE, {0: 4.5, 1: 4.51, 2: 4.49}),
             hand_row(Arm.RAW_ONLY, {0: 4.2, 1: 4.21, 2: 4.19})]
    assert verdict_of(clear, "proxies below bytes") == "holds"  # the paper: small proxy models lose to bytes
    assert verdict_of(clear, "transfer") == "does not hold"  # raw-only is better here, not worse
    noisy = [hand_row(Arm.BYTES, {0: 4.0, 1: 4.6, 2: 3.4}), hand_row(Arm.PROXY_BPE, {0: 4.5, 1: 4.1, 2: 3.5})]  # d = +0.5, -0.5, +0.1
    assert verdict_of(noisy, "proxies below bytes").startswith("not resolved")
    single = [hand_row(Arm.BYTES, {0: 4.0, 1: 4.2}), hand_row(Arm.PROXY_BPE, {1: 4.5, 2: 4.4})]  # seed 1 in common
    assert verdict_of(single, "proxies below bytes") == "agrees, one common seed: no spread measured"
    apart = [hand_row(Arm.BYTES, {0: 4.0}), hand_row(Arm.PROXY_BPE, {1: 4.5})]
    assert verdict_of(apart, "proxies below bytes") == "not compared (no seed in common)"


def test_differences_are_paired_by_seed_so_a_shared_seed_spread_cancels():
    import math
    import statistics

    from proxylm.study.report import compute_findings, paired_difference

    # Seeds move both arms together (4.0, 4.6, 3.4): unpaired, that spread would swamp the 0.1 gap.
    bytes_row = hand_row(Arm.BYTES, {0: 4.0, 1: 4.6, 2: 3.4})
    proxy_row = hand_row(Arm.PROXY_BPE, {0: 4.1, 1: 4.71, 2: 3.49, 3: 9.0})  # seed 3 has no bytes partner
    d = paired_difference(proxy_row, bytes_row)
    per_seed = [0.1, 0.11, 0.09]
    assert d.seeds == [0, 1, 2] and d.n == 3
    assert d.mean == pytest.approx(statistics.fmean(per_seed))
    assert d.se == pytest.approx(statistics.stdev(per_seed) / math.sqrt(3))
    unpaired = math.sqrt(statistics.variance([4.1, 4.71, 3.49]) / 3 + statistics.variance([4.0, 4.6, 3.4]) / 3)
    assert abs(d.mean) < 2 * unpaired and d.resolved
    finding = next(f for f in compute_findings([bytes_row, proxy_row], None) if "proxies below bytes" in f["paper"])
    assert finding["verdict"] == "holds"
    assert finding["measured"] == f"proxy-bpe {statistics.fmean([4.1, 4.71, 3.49]):.4f} vs bytes 4.0000: +0.1000 ± {d.se:.4f} BPB (paired, n=3)"


def test_findings_cover_each_code_set_beside_the_held_out_documents():
    code_bytes = {s: {"humaneval": 3.0 + 0.01 * s, "mbpp": 3.2} for s in range(3)}
    code_proxy = {s: {"humaneval": 2.5 + 0.01 * s, "mbpp": 3.2 + 0.1 * (s - 1)} for s in range(3)}
    rows = [hand_row(Arm.BYTES, {0: 4.0, 1: 4.01, 2: 3.99}, code_bytes), hand_row(Arm.PROXY_BPE, {0: 4.5, 1: 4.51, 2: 4.49}, code_proxy)]
    assert verdict_of(rows, "proxies below bytes") == "holds"
    assert verdict_of(rows, "proxies below bytes", "humaneval") == "does not hold"  # the proxy is better on HumanEval here
    assert verdict_of(rows, "proxies below bytes", "mbpp").startswith("not resolved")


def test_the_size_trend_is_called_only_when_the_gap_moves_by_more_than_two_standard_errors():
    from dataclasses import replace

    def sized(size, params, bytes_bpb, proxy_bpb):
        rows = [hand_row(Arm.BYTES, bytes_bpb), hand_row(Arm.PROXY_BPE, proxy_bpb)]
        return [replace(row, size=size, results=[{**r, "params": params} for r in row.results]) for row in rows]

    small = sized("small", 1e6, {0: 3.0, 1: 3.01, 2: 2.99}, {0: 3.8, 1: 3.82, 2: 3.78})  # gap +0.80 ± 0.006
    shrinks = small + sized("tiny", 5e6, {0: 2.0, 1: 2.01, 2: 1.99}, {0: 2.6, 1: 2.62, 2: 2.58})  # +0.60 ± 0.006
    assert verdict_of(shrinks, "grows with model size") == "agrees (the gap shrinks with size while both arms improve)"
    grows = small + sized("tiny", 5e6, {0: 2.0, 1: 2.01, 2: 1.99}, {0: 3.0, 1: 3.02, 2: 2.98})  # +1.00
    assert verdict_of(grows, "grows with model size").startswith("disagrees")
    noisy = small + sized("tiny", 5e6, {0: 2.0, 1: 2.01, 2: 1.99}, {0: 2.5, 1: 3.0, 2: 2.7})  # +0.73 ± 0.15
    assert verdict_of(noisy, "grows with model size").startswith("not resolved")
    stalled = small + sized("tiny", 5e6, {0: 3.1, 1: 3.11, 2: 3.09}, {0: 3.7, 1: 3.72, 2: 3.68})  # bytes no better
    assert "undertrained" in verdict_of(stalled, "grows with model size")


def test_alignment_is_read_from_the_translation_probe_paired_by_seed():
    from proxylm.study.report import Row, compute_findings

    def probed(arm, given, plain):
        return Row("tiny", arm, [{"seed": s, "bpb": 3.0, "translation": {"bpb_given_compressed": g, "raw_bpb": p}}
                                 for s, (g, p) in enumerate(zip(given, plain))])

    def alignment(rows):
        return [f for f in compute_findings(rows, None) if "aligns the views" in f["paper"]]

    helps = alignment([probed(Arm.PROXY_BPE, [2.0, 2.11, 1.9], [2.5, 2.6, 2.4])])  # -0.5 each seed, whatever the seed's level
    assert len(helps) == 1 and helps[0]["verdict"].startswith("holds")
    hurts = alignment([probed(Arm.PROXY_BPE, [2.6, 2.71, 2.5], [2.5, 2.6, 2.4])])
    assert hurts[0]["verdict"].startswith("does not hold")
    noisy = alignment([probed(Arm.PROXY_BPE, [2.0, 2.9, 2.4], [2.5, 2.6, 2.4])])  # -0.5, +0.3, 0
    assert noisy[0]["verdict"].startswith("not resolved")
    assert alignment([probed(Arm.RAW_ONLY, [2.0, 2.1, 1.9], [2.5, 2.6, 2.4])]) == []  # the control never saw a compressed view


def test_the_translation_figure_plots_the_paired_alignment_gap_with_its_error_bar(tmp_path):
    import matplotlib.pyplot as plt

    from proxylm.study.figures import plot_translation, write_figures
    from proxylm.study.report import Row

    row = Row("tiny", Arm.PROXY_BPE, [{"seed": s, "bpb": 3.0, "translation": {
        "byte_accuracy": 0.1, "bpb_given_compressed": g, "raw_bpb": 2.5, "raw_to_compressed": {"accuracy": 0.02}}}
        for s, g in enumerate([2.0, 2.2, 2.1])])
    written = write_figures([row], None, tmp_path)
    assert written["translation.png"].read_bytes().startswith(PNG_MAGIC)
    fig = plot_translation([row], None)
    bar = fig.axes[1].patches[0]
    assert bar.get_height() == pytest.approx(-0.4)  # the mean paired gap, not the two BPBs
    plt.close(fig)


def test_the_setup_states_each_arms_cost_per_position_against_bytes():
    from proxylm.study.report import Row, position_cost_lines

    def row(arm, flops, symbols):
        return Row("tiny", arm, [{"seed": 0, "bpb": 3.0, "train": {"flops": flops, "symbols": symbols}}])

    rows = [row(Arm.BYTES, 4e12, 1e5), row(Arm.PROXY_BPE, 4e12, 8.5e4), row(Arm.PROXY_NEURAL, 4e12, 3.2e4)]
    assert position_cost_lines(rows) == [
        "- FLOPs per position at tiny, relative to bytes (4e+07): proxy-bpe 1.18x, proxy-neural 3.12x; "
        "at equal FLOPs an arm trains on that many times fewer positions."]
    assert position_cost_lines(rows[1:]) == []  # nothing to compare against without the byte baseline


def test_the_setup_lists_extra_seeds_beside_the_size_seeds():
    from proxylm.study.report import seeds_text

    assert seeds_text([0, 1], {}) == "[0, 1]"
    assert seeds_text([0, 1], {"bytes": [2], "raw-only": [2], "proxy-gzip": [2, 3]}) == (
        "[0, 1]; also [2] for bytes, raw-only; also [2, 3] for proxy-gzip")


def test_the_setup_states_each_trials_precision_and_machine():
    from proxylm.study.report import Row, precision_lines

    def result(trial, dtype=None, machine=None):
        train = {k: v for k, v in (("dtype", dtype), ("machine", machine)) if v}
        return {"trial": trial, "seed": 0, "bpb": 3.0, "train": train}

    avx2 = [result(f"tiny/bytes/seed-{s}", "fp32", "EPYC (AVX2), 2 cores") for s in range(4)]
    assert precision_lines([Row("tiny", Arm.BYTES, avx2)]) == ["- Trained in fp32 on EPYC (AVX2), 2 cores (every trial)."]
    mixed = [Row("tiny", Arm.BYTES, avx2), Row("base", Arm.BYTES, [result("base/bytes/seed-2", "bf16", "EPYC (AVX512), 2 cores"),
                                                                    result("base/bytes/seed-3")])]
    assert precision_lines(mixed) == [
        "- Trained in (each trial's resolved `run.dtype`, its machine): fp32 on EPYC (AVX2), 2 cores: 4 trials; "
        "bf16 on EPYC (AVX512), 2 cores: base/bytes/seed-2; precision not recorded on machine not recorded: base/bytes/seed-3."]


def hand_result(arm: str, seed: int, bpb: float, wall_s: float) -> dict:
    """A result.json as the evaluate part writes it, with a two-point curve."""
    return {
        "trial": f"micro/{arm}/seed-{seed}", "size": "micro", "preset": "small", "arm": arm, "seed": seed, "bpb": bpb,
        "params": 1e5, "eval": {"documents": 4, "raw_bytes": 1000},
        "train": {"steps": 10, "flops": 1e9, "symbols": 1280, "raw_bytes": 1200 + seed, "train_time_s": wall_s - 1, "wall_s": wall_s},
        "curve": [{"step": 5, "flops": 5e8, "raw_bytes": 600 + seed, "bpb": bpb + 1.0}, {"step": 10, "flops": 1e9, "raw_bytes": 1200 + seed, "bpb": bpb}],
        "code": {"humaneval": {"bpb": bpb - 0.5, "documents": 2, "raw_bytes": 1525}, "mbpp": {"bpb": bpb - 0.25, "documents": 2, "raw_bytes": 126}},
        "translation": None, "eval_time_s": 7.0 + 2 * seed,
    }


def test_the_report_shows_code_sets_learning_curves_against_raw_bytes_and_wall_times(tmp_path):
    from proxylm.io import atomic_write_json
    from proxylm.study.report import write_report

    cfg = load_study_config(None, [f"out={tmp_path}", "arms=[bytes, proxy-bpe, raw-only]", "seeds=[0, 1]", "parts=[report]",
                                   "sizes=[{name: micro, preset: small, flops: 1.0e+9}]"])
    for arm, bpb, wall_s in (("bytes", 4.0, 120.0), ("proxy-bpe", 4.5, 150.0), ("raw-only", 4.7, 60.0)):
        for seed in (0, 1):
            atomic_write_json(tmp_path / f"trials/micro/{arm}/seed-{seed}/result.json", hand_result(arm, seed, bpb + 0.1 * seed, wall_s + 2 * seed))
    summary = write_report(cfg)
    report = (tmp_path / "RESULTS.md").read_text()

    bytes_line = next(line for line in report.splitlines() if line.startswith("| bytes | raw bytes only"))
    assert bytes_line.endswith("| 121 | 8 |")  # train wall s and eval s, means over the two seeds
    assert "| proxy-bpe | 2 | 4.5500 ± 0.0707 | 4.0500 ± 0.0707 | +0.5000 ± 0.0000 (paired, n=2) |" in report
    assert "HumanEval (2 programs, 1,525 bytes), MBPP (2 programs, 126 bytes)" in report
    assert "| raw-only | 2 | 10 | 1e+09 | 1,200 | 4.7500 |" in report  # the learning-curve table, seeds averaged
    proxy = next(row for row in summary["rows"] if row["arm"] == "proxy-bpe")
    assert [p["raw_bytes"] for p in proxy["curve"]] == [600.5, 1200.5]
    assert proxy["code"]["humaneval"]["bpb_mean"] == pytest.approx(4.05)
    assert (tmp_path / "figures/bpb_vs_raw_bytes.png").read_bytes().startswith(PNG_MAGIC)


def test_a_resumed_trial_reports_its_training_time_over_every_process():
    from proxylm.study.report import Row

    whole = {"seed": 0, "bpb": 3.0, "train": {"wall_s": 1810.0, "train_time_s": 1790.0}}
    resumed = {"seed": 1, "bpb": 3.0, "train": {"wall_s": 350.0, "train_time_s": 1780.0}}  # last process: the final 70 steps
    assert Row("tiny", Arm.BYTES, [whole, resumed]).train_wall_s == pytest.approx((1810.0 + 1780.0) / 2)
    assert Row("tiny", Arm.BYTES, [{"seed": 0, "bpb": 3.0, "train": {}}]).train_wall_s is None


def test_missing_trials_are_estimated_from_the_same_arms_measured_wall_times():
    from proxylm.study.report import Row, estimated_wall_s

    cfg = load_study_config(None, ["arms=[bytes, proxy-bpe, proxy-gzip]", "seeds=[0]",
                                   "sizes=[{preset: small, flops: 1.0e+12}, {preset: tiny, flops: 4.0e+12}, {preset: base, flops: 8.0e+12}]"])
    small, tiny, base = cfg.sizes

    def row(size, arm, train_s, eval_s):
        return Row(size, arm, [{"seed": 0, "bpb": 3.0, "train": {"wall_s": train_s}, "eval_time_s": eval_s}])

    rows = [row("small", Arm.BYTES, 100.0, 10.0), row("tiny", Arm.BYTES, 380.0, 20.0), row("tiny", Arm.PROXY_BPE, 500.0, 100.0)]
    assert estimated_wall_s(tiny, Arm.BYTES, cfg, rows) == 400.0  # measured at this size
    assert estimated_wall_s(small, Arm.PROXY_BPE, cfg, rows) == 150.0  # the tiny trial at a quarter of its budget
    assert estimated_wall_s(base, Arm.BYTES, cfg, rows) == pytest.approx((110.0 * 8 + 400.0 * 2) / 2)  # both sizes, scaled
    assert estimated_wall_s(tiny, Arm.PROXY_GZIP, cfg, rows) == 500.0  # never run: the size's mean
    assert estimated_wall_s(base, Arm.PROXY_GZIP, cfg, rows) is None  # nothing to go by


def test_curve_points_cached_before_they_carried_counters_take_raw_bytes_from_the_metrics_log(tmp_path):
    from proxylm.io import atomic_write_json
    from proxylm.study.run import curve_point, score_curve

    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    atomic_write_json(cache / "step-5.json", {"bpb": 5.0, "params": 10})  # an older cache entry: no counters
    atomic_write_json(cache / "step-10.json", {"bpb": 4.0, "params": 10, "counters": {"step": 10, "flops": 2e9, "raw_bytes": 900}})
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "flops": s * 2e8, "raw_bytes": s * 90}) + "\n" for s in (4, 5, 6)))
    trained = {"run_dir": str(run_dir), "steps": 10, "flops": 2e9}
    points = score_curve(None, cache, {10: tmp_path / "final"}, trained, [])  # both steps cached: nothing is scored
    assert [curve_point(p, trained) for p in points] == [
        {"step": 5, "flops": 1e9, "raw_bytes": 450, "bpb": 5.0}, {"step": 10, "flops": 2e9, "raw_bytes": 900, "bpb": 4.0}]
