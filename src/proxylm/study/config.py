"""The study's config: arms, sizes with their budgets, data, compressors, evaluation, parts.

    cfg = load_study_config("configs/study-cpu.yaml", ["arms=[bytes,proxy-bpe,raw-only]", "only_sizes=[tiny]", "only_seeds=[0]"])

Design choices:
- One typed tree, loaded like every proxylm config (YAML, then dotted overrides); arms, proxies
  and parts are Enums, so a misspelt arm fails with the list of known ones.
- The base training config (`train`) is a whole TrainConfig: the arms share it. Its run section
  needs no stop (the study sets the stop of every trial from its size's budget).
- A size carries its budget (FLOPs or symbols), optionally its own peak lr (the paper's lr
  depends on size), arms and seeds; everything else is shared by every size.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxylm.config import ConfigError, from_dict, parse_override, read_yaml, set_dotted
from proxylm.errors import UserError
from proxylm.evaluate.tasks import TaskSpec
from proxylm.train.config import ModelSection, TrainConfig


class Arm(enum.Enum):
    BYTES = "bytes"  # byte baseline: raw bytes only, no sentinels
    TOKEN_BPE = "token-bpe"  # BPE token baseline; BPB = its nats over the raw bytes
    PROXY_BPE = "proxy-bpe"  # the paper's recipe with BPE ids as the proxy
    RAW_ONLY = "raw-only"  # control: proxy-bpe with its compressed views dropped
    BYTES_RAW_ONLY_BUDGET = "bytes-raw-only-budget"  # byte baseline at raw-only's (smaller) FLOPs
    PROXY_BPE_BYTES = "proxy-bpe-bytes"  # BPE ids written as fixed-width bytes, id order
    PROXY_BPE_BYTES_GRAY = "proxy-bpe-bytes-gray"  # ... Gray-code order
    PROXY_NEURAL = "proxy-neural"  # arithmetic coding under a small byte LM, equal-information windows
    PROXY_GZIP = "proxy-gzip"  # gzip bytes as the proxy
    PROXY_BPE_P05 = "proxy-bpe-p0.5"  # compressed rate p = 0.5 instead of 0.9
    PROXY_BPE_COOLDOWN = "proxy-bpe-cooldown"  # p decays linearly to 0 over the last 30% of steps
    NO_PAIRING = "proxy-bpe-no-pairing"  # control: the warm-up without translation pairs
    PAIRING_ALWAYS = "proxy-bpe-pairing-always"  # control: translation pairs for the whole run


class Proxy(enum.Enum):
    """Which prepared shards an arm trains on (every preparation holds the same raw documents)."""

    BPE = "bpe"
    BPE_BYTES = "bpe-bytes"
    BPE_BYTES_GRAY = "bpe-bytes-gray"
    NEURAL = "neural"
    GZIP = "gzip"


class Part(enum.Enum):
    PREPARE = "prepare"  # the neural proxy's byte LM, then shards for every proxy the arms need (one process)
    TRAIN = "train"  # train every trial that is not trained yet (one process or torchrun)
    EVALUATE = "evaluate"  # score every trained trial that has no result yet (one process)
    STABILITY = "stability"  # stability probe of the prepared compressors on the held-out documents
    REPORT = "report"  # tables, plots and the Markdown report from whatever results exist


# ---- config --------------------------------------------------------------------------------------


@dataclass
class SizeConfig:
    preset: str
    """Model preset (proxylm.model.model_preset): 'small' < 'tiny' < 'base' on a CPU, '0.5b'.. on GPUs."""
    flops: float | None = None
    """Training FLOPs every arm stops at (give this or `symbols`)."""
    symbols: int | None = None
    """Training positions every arm stops after, rounded down to whole steps (give this or `flops`)."""
    name: str | None = None
    """Name in tables and directories; None: the preset."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the preset's fields (train.model keys, e.g. {dim: 64}) for this size only."""
    lr: float | None = None
    """Peak learning rate at this size (the paper's depends on size); None: train.optim.lr. Same for every arm."""
    arms: list[Arm] | None = None
    """Arms run at this size; None: all of the study's `arms`."""
    seeds: list[int] | None = None
    """Seeds at this size; None: the study's `seeds`."""
    extra_seeds: dict[str, list[int]] = field(default_factory=dict)
    """More seeds for some arms at this size, e.g. {bytes: [1, 2], proxy-bpe: [1, 2]}: where differences are small."""

    def __post_init__(self) -> None:
        from proxylm.model import PRESET_NAMES

        arm_names = {a.value for a in Arm}
        for arm, seeds in self.extra_seeds.items():
            if arm not in arm_names:
                raise ConfigError(f"sizes ({self.label}): extra_seeds names no arm {arm!r} (arms: {', '.join(sorted(arm_names))})")
            if not isinstance(seeds, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
                raise ConfigError(f"sizes ({self.label}): extra_seeds.{arm} must be a list of integer seeds, got {seeds!r}")
        if self.preset not in PRESET_NAMES:
            raise ConfigError(f"sizes: preset must be one of {', '.join(PRESET_NAMES)}, got {self.preset!r}")
        if (self.flops is None) == (self.symbols is None):
            raise ConfigError(f"sizes ({self.label}): give exactly one budget, `flops` or `symbols`")
        if (self.flops is not None and self.flops <= 0) or (self.symbols is not None and self.symbols <= 0):
            raise ConfigError(f"sizes ({self.label}): the budget must be > 0")
        known = {f.name for f in dataclasses.fields(ModelSection)} - {"preset"}
        unknown = sorted(set(self.model) - known)
        if unknown:
            raise ConfigError(f"sizes ({self.label}): unknown model key '{unknown[0]}' (known: {', '.join(sorted(known))})")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"sizes ({self.label}): lr must be > 0, got {self.lr}")
        if self.seeds is not None and not self.seeds:
            raise ConfigError(f"sizes ({self.label}): seeds must list at least one seed (or be null)")

    @property
    def label(self) -> str:
        return self.name or self.preset


@dataclass
class DataSection:
    corpus: str = "stdlib"
    """Corpus every proxy is prepared from (a JSONL file or glob, source files, parquet, `stdlib`)."""
    limit: int | None = None
    """Only the first this-many documents of the corpus (the same slice for every proxy)."""
    val_fraction: float = 0.05
    """Share of documents held out (by a hash of their id): the evaluation documents."""
    max_piece_bytes: int | None = 4096
    """Documents are prepared (and evaluated) as pieces of at most this many bytes (`prepare
    --max-piece-bytes`): short pieces let a translation pair fit in one row. None: whole documents."""
    fit_bytes: int = 8_000_000
    """Bytes of the train split that trainable compressors (BPE) are fitted on."""
    workers: int = 1
    """Encoding processes for prepare."""
    dir: str | None = None
    """Where the shards go (one directory per proxy); None: `<out>/data`."""

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"data.limit must be >= 2 or null, got {self.limit}")
        if self.max_piece_bytes is not None and self.max_piece_bytes < 16:
            raise ConfigError(f"data.max_piece_bytes must be >= 16 or null, got {self.max_piece_bytes}")
        if self.fit_bytes < 1 or self.workers < 1:
            raise ConfigError("data.fit_bytes and data.workers must be >= 1")


@dataclass
class CompressorSpecs:
    bpe: str = "bpe:vocab=4096"
    """BPE proxy (and the token baseline's tokenizer)."""
    bpe_bytes: str = "bpe-bytes:vocab=4096,order=id"
    """BPE ids written as bytes, id order."""
    bpe_bytes_gray: str = "bpe-bytes:vocab=4096,order=gray"
    """BPE ids written as bytes, Gray-code order."""
    neural: str = "neural:window_bits=16"
    """Neural proxy without its model (the study adds model=...): 16-bit windows as in the paper, so
    the arm's model has a 65,856-row embedding and head (320 + 2^16 ids)."""
    gzip: str = "gzip"
    """gzip proxy."""

    def spec(self, proxy: Proxy) -> str:
        return getattr(self, proxy.value.replace("-", "_"))

    def __post_init__(self) -> None:
        from proxylm.compress import parse_spec

        for proxy in Proxy:
            if "model" in parse_spec(self.spec(proxy))[1]:
                raise ConfigError(f"compressors.{proxy.value.replace('-', '_')}: leave out model=; set neural_lm.model instead")


@dataclass
class NeuralLMConfig:
    model: str | None = None
    """A byte-model checkpoint directory to code with; None: the prepare part trains one."""
    preset: str = "small"
    """Shape of the byte LM the prepare part trains."""
    shape: dict[str, Any] = field(default_factory=dict)
    """Overrides of the preset's fields (e.g. {dim: 512, n_layers: 12} for the paper's ~40M-parameter LM)."""
    steps: int = 300
    """Its training steps (bytes schedule, the study's optimiser settings)."""
    seq_len: int = 128
    """Its rows, packed with `<bos> chunk <eos>` units of at most the coder's longest row + 5 positions
    (69 for the default 64-byte windows), each kept whole in one row; at least that."""
    batch_size: int = 16
    """Its rows per step."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.seq_len < 2 or self.batch_size < 1:
            raise ConfigError("neural_lm: steps and batch_size must be >= 1, seq_len >= 2")


@dataclass
class EvalSection:
    docs: int = 32
    """Held-out documents every arm is scored on."""
    max_doc_bytes: int = 2048
    """Each is cut to its first this-many bytes (at a character boundary)."""
    context: int | None = None
    """Scoring window in ids; None: train.pack.seq_len."""
    stride: int | None = None
    """Window step; None: half the window."""
    curve_points: int = 3
    """Checkpoints per trial scored for the BPB-vs-FLOPs curve (evenly spaced, the last one final)."""
    translate_docs: int = 16
    """Documents in the translation probe (the first of the held-out sample)."""
    translate_max_bytes: int = 128
    """... each cut to this many bytes."""
    stability_docs: int = 64
    """Documents in the stability probe."""
    batch_size: int = 8
    """Windows per forward pass."""
    code_sets: list[str] = field(default_factory=lambda: ["humaneval", "mbpp"])
    """Real-code held-out sets, scored whole at each trial's final checkpoint: the reference programs
    (prompt + canonical solution) of `humaneval` and of `mbpp` (its test split), either also as
    NAME:PATH for a HumanEval-format JSONL (proxylm.evaluate.tasks); [] for none."""
    code_docs: int | None = None
    """Only the first this-many programs of each code set; None: all (HumanEval 164, MBPP 500)."""

    def __post_init__(self) -> None:
        for name in ("docs", "max_doc_bytes", "curve_points", "translate_docs", "translate_max_bytes", "stability_docs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_doc_bytes < 16:
            raise ConfigError(f"eval.max_doc_bytes must be >= 16, got {self.max_doc_bytes}")
        if self.code_docs is not None and self.code_docs < 1:
            raise ConfigError(f"eval.code_docs must be >= 1 or null, got {self.code_docs}")
        names = [code_set_name(spec, f"eval.code_sets[{i}]") for i, spec in enumerate(self.code_sets)]
        if len(set(names)) != len(names):
            raise ConfigError(f"eval.code_sets: each benchmark at most once, got {self.code_sets}")


def code_set_name(spec: str, key: str = "eval.code_sets") -> str:
    """The benchmark a code-set spec (`humaneval`, `mbpp`, either with `:PATH`) names: its key in results."""
    try:
        return TaskSpec.parse(spec).benchmark.value
    except UserError:
        raise ConfigError(f"'{key}' must be humaneval or mbpp (optionally NAME:PATH), got {spec!r}") from None


def _all_arms() -> list[Arm]:
    return list(Arm)


def _all_parts() -> list[Part]:
    return list(Part)


@dataclass
class StudyConfig:
    sizes: list[SizeConfig] = field(default_factory=list)
    """Model sizes with their budgets (and optionally their own arms and seeds)."""
    out: str = "runs/study"
    """Study directory: data/, compressor-lm/, trials/<size>/<arm>/seed-<s>/, stability.json, results.json, RESULTS.md, figures/."""
    arms: list[Arm] = field(default_factory=_all_arms)
    """Arms to run (a size's own `arms` narrows this further)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds (weights and data order); every arm is trained with each."""
    only_sizes: list[str] | None = None
    """Run only the sizes with these names; None: all."""
    only_seeds: list[int] | None = None
    """Run only these seeds of each size's seeds (a size's own `seeds` and `extra_seeds` too); None: all."""
    parts: list[Part] = field(default_factory=_all_parts)
    """Parts to run, in their fixed order prepare, train, evaluate, stability, report."""
    data: DataSection = field(default_factory=DataSection)
    """Corpus and preparation."""
    compressors: CompressorSpecs = field(default_factory=CompressorSpecs)
    """The proxies' compressor specs."""
    neural_lm: NeuralLMConfig = field(default_factory=NeuralLMConfig)
    """The byte LM the neural proxy codes with."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Base training config for every arm; the study sets data, schedule, mix.drop_compressed,
    model.preset, seeds, stops, run.out and checkpoints. Everything else is shared."""
    eval: EvalSection = field(default_factory=EvalSection)
    """Held-out evaluation and probes."""
    results_dir: str | None = None
    """Also keep each trial's result.json (as <size>/<arm>/seed-<s>.json), stability.json and the
    proxies' measured compression (compression.json) here: a folder under version control, so a
    fresh checkout skips finished trials and rebuilds the report from them while the runs
    themselves (checkpoints, prepared shards) stay local. None: only under `out`."""
    report_md: str | None = None
    """Also write the Markdown report here (figures into a `results` folder beside it)."""
    command: str | None = None
    """The command line shown in the report (the CLI fills it in)."""
    keep_checkpoints: bool = False
    """Keep every curve checkpoint; False: only each trial's final one survives its evaluation."""

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ConfigError("sizes must list at least one model size with its budget")
        names = [s.label for s in self.sizes]
        if len(set(names)) != len(names):
            raise ConfigError(f"sizes: names must be unique, got {names}")
        if self.only_sizes is not None and (missing := sorted(set(self.only_sizes) - set(names))):
            raise ConfigError(f"only_sizes: no size named {missing[0]!r} (sizes: {', '.join(names)})")
        if self.only_seeds is not None and not self.only_seeds:
            raise ConfigError("only_seeds must list at least one seed (or be null for all)")
        if not self.seeds or not self.arms or not self.parts:
            raise ConfigError("seeds, arms and parts must each list at least one item")
        run = self.train.run
        if run.max_time_s is not None:
            raise ConfigError("train.run.max_time_s would stop arms at different FLOPs; the study stops at sizes[].flops or .symbols")
        if self.train.mix.drop_compressed:
            raise ConfigError("train.mix.drop_compressed is the raw-only arm's switch; leave it false in the base config")


def load_study_config(path: str | Path | None = None, overrides: list[str] | None = None) -> StudyConfig:
    """YAML + dotted overrides. The base `train.run` needs no stop: the study sets one per trial
    (a placeholder satisfies RunConfig's check until then)."""
    data = read_yaml(path) if path is not None else {}
    for item in overrides or []:
        set_dotted(data, *parse_override(item))
    run = data.setdefault("train", {}).setdefault("run", {}) if isinstance(data.get("train", {}), dict) else {}
    if isinstance(run, dict) and not any(run.get(k) is not None for k in ("max_steps", "max_flops", "max_time_s")):
        run["max_steps"] = 1
    return from_dict(StudyConfig, data)
