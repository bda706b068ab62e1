"""Stability of a compressor under small edits (the paper's stability analysis, DESIGN.md section 3).

For each of N documents (a seeded sample), delete 10% of its characters at random positions,
compress both versions and measure the normalised Levenshtein distance between the two symbol
sequences (edit distance / length of the longer one). A proxy whose output changes little
when the input changes little is one a model can align with the raw bytes; the paper finds
the tokenizer most stable, the neural proxy next and gzip least, and gzip is the proxy that
fails to transfer.

Design choices:
- Edit distance from rapidfuzz (bit-parallel, on sequences of integers), never hand-written.
- Documents are a bottom-k hash sample of the whole corpus keyed by the seed; deletions use a
  generator seeded by (seed, document id), so a row does not depend on the other documents.
- Trainable compressors are fitted on a bounded sample of the train split with the probed
  documents left out, so the probe measures held-out text.
- Characters are Unicode code points, so a deletion never cuts a UTF-8 sequence in half.
- Documents are cut to their first `max_bytes` (at a character boundary): edit distance is
  quadratic in length, and the stdlib's largest modules would otherwise dominate the run time.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from proxylm import compress
from proxylm.compress import Compressor
from proxylm.config import ConfigError
from proxylm.data.corpus import Corpus, CorpusConfig, CorpusError, Document, Split, iter_split, sample_documents


@dataclass
class StabilityConfig:
    corpus: CorpusConfig
    """Where the documents come from."""
    compressors: list[str]
    """Compressor specs to compare, e.g. ["bpe:vocab=8192", "gzip"]."""
    docs: int = 200
    """How many documents to probe."""
    seed: int = 0
    """Chooses the documents and the deleted characters."""
    deletion: float = 0.1
    """Share of each document's characters deleted."""
    max_bytes: int = 16384
    """Documents are cut to their first this-many bytes (at a character boundary)."""
    val_fraction: float = 0.02
    """The train/validation split used to choose what trainable compressors are fitted on."""
    fit_bytes: int = 32_000_000
    """Trainable compressors are fitted on this many bytes of the train split (probed documents excluded)."""

    def __post_init__(self) -> None:
        if not self.compressors:
            raise ConfigError("give at least one compressor spec (e.g. --compressors bpe:vocab=8192,gzip)")
        if self.docs < 1:
            raise ConfigError(f"docs must be >= 1, got {self.docs}")
        if not 0.0 < self.deletion < 1.0:
            raise ConfigError(f"deletion must be in (0, 1), got {self.deletion}")
        if self.max_bytes < 16:
            raise ConfigError(f"max_bytes must be >= 16, got {self.max_bytes}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class StabilityRow:
    compressor: str  # the spec
    distance: float  # mean normalised Levenshtein distance over documents (lower = more stable)
    std: float
    median: float
    ratio: float  # raw bytes / symbols over the probed (unperturbed) documents
    alphabet_size: int


@dataclass
class StabilityReport:
    rows: list[StabilityRow]
    doc_ids: list[str]  # the probed documents, in sample order
    seed: int
    deletion: float
    corpus: dict[str, Any] = field(default_factory=dict)

    @property
    def docs(self) -> int:
        return len(self.doc_ids)

    def ranking(self) -> list[StabilityRow]:
        """Most stable first."""
        return sorted(self.rows, key=lambda row: row.distance)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": "normalised Levenshtein distance between the compressed document and its copy with characters deleted",
            "normalized_levenshtein": {row.compressor: row.distance for row in self.rows},
            "ranking": [row.compressor for row in self.ranking()],
            "results": [vars(row) for row in self.ranking()],
            "docs": self.docs,
            "seed": self.seed,
            "deletion": self.deletion,
            "corpus": self.corpus,
            "doc_ids": self.doc_ids,
        }

    def table(self) -> str:
        lines = [
            f"stability under {self.deletion:.0%} character deletions, {self.docs} documents, seed {self.seed}",
            f"{'rank':>4}  {'compressor':<34} {'norm. Levenshtein':>17} {'± std':>7} {'median':>7} {'ratio':>6} {'alphabet':>9}",
        ]
        for rank, row in enumerate(self.ranking(), start=1):
            lines.append(
                f"{rank:>4}  {row.compressor:<34} {row.distance:>17.4f} {row.std:>7.4f} {row.median:>7.4f}"
                f" {row.ratio:>6.2f} {row.alphabet_size:>9,}"
            )
        return "\n".join(lines)


def delete_characters(text: str, fraction: float, rng: np.random.Generator) -> str:
    """`text` with round(fraction * len) characters removed at uniformly random positions."""
    codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (N,)
    n = len(codepoints)
    drop = rng.choice(n, size=round(fraction * n), replace=False)
    keep = np.ones(n, dtype=bool)
    keep[drop] = False
    return codepoints[keep].tobytes().decode("utf-32-le", "surrogatepass")


def truncate_utf8(data: bytes, max_bytes: int) -> bytes:
    """The longest prefix of at most max_bytes that ends on a character boundary."""
    if len(data) <= max_bytes:
        return data
    return data[:max_bytes].decode("utf-8", "ignore").encode("utf-8")


def document_rng(seed: int, doc_id: str) -> np.random.Generator:
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


def normalized_distance(a: np.ndarray, b: np.ndarray) -> float:
    return Levenshtein.normalized_distance(a.tolist(), b.tolist())


def probe_stability(config: StabilityConfig, *, progress: bool = False) -> StabilityReport:
    corpus = Corpus(config.corpus)
    compressors = {spec: compress.build(spec) for spec in config.compressors}  # bad specs fail before any work
    probed = sample_documents(corpus, salt=f"stability-{config.seed}", max_docs=config.docs)
    if not probed:
        raise CorpusError(f"corpus '{config.corpus.source}' has no usable documents to probe")
    fit_trainable(compressors, corpus, config, exclude={doc.id for doc in probed}, progress=progress)
    pairs = [perturbed_pair(doc, config) for doc in probed]
    rows = [measure(spec, compressor, pairs, progress) for spec, compressor in compressors.items()]
    doc_ids = [doc.id for doc in probed]
    return StabilityReport(rows=rows, doc_ids=doc_ids, seed=config.seed, deletion=config.deletion, corpus=corpus.describe())


def perturbed_pair(doc: Document, config: StabilityConfig) -> tuple[bytes, bytes]:
    original = truncate_utf8(doc.data, config.max_bytes)
    edited = delete_characters(original.decode("utf-8"), config.deletion, document_rng(config.seed, doc.id))
    return original, edited.encode("utf-8")


def fit_trainable(
    compressors: dict[str, Compressor], corpus: Corpus, config: StabilityConfig, *, exclude: set[str], progress: bool
) -> None:
    untrained = {spec: c for spec, c in compressors.items() if not c.ready}
    if not untrained:
        return
    train = (d for d in iter_split(corpus, Split.TRAIN, config.val_fraction) if d.id not in exclude)
    sample = [d.data for d in sample_documents(train, salt="fit", max_bytes=config.fit_bytes)]
    if not sample:
        raise CorpusError(f"corpus '{config.corpus.source}': no training documents left to fit {', '.join(untrained)} on")
    for spec, compressor in untrained.items():
        if progress:
            print(f"fitting {spec} on {len(sample)} train documents ({sum(map(len, sample)) / 1e6:.1f} MB)", file=sys.stderr)
        compressor.fit(sample)


def measure(spec: str, compressor: Compressor, pairs: list[tuple[bytes, bytes]], progress: bool) -> StabilityRow:
    from tqdm import tqdm

    distances = []
    raw_bytes = symbols = 0
    for original, edited in tqdm(pairs, desc=spec, unit="doc", disable=None if progress else True, file=sys.stderr):
        a = compressor.encode(original)
        distances.append(normalized_distance(a, compressor.encode(edited)))
        raw_bytes += len(original)
        symbols += len(a)
    return StabilityRow(
        compressor=spec,
        distance=statistics.fmean(distances),
        std=statistics.pstdev(distances),
        median=statistics.median(distances),
        ratio=raw_bytes / max(symbols, 1),
        alphabet_size=compressor.alphabet_size,
    )
