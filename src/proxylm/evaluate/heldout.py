"""Which documents an evaluation scores: the held-out split unless told otherwise.

    docs = open_eval_documents("stdlib", EvalSplit.VAL, val_fraction=0.02, limit=50)
    for doc in docs: ...        # corpus Documents of the val split, the first 50
    docs.describe()             # {"split": "val", "val_fraction": 0.02}

Design choices:
- The split is `prepare`'s: a hash of the document id against the preparation's `val_fraction`
  (proxylm.data.corpus.split_of), so a document scored as held out was never trained on,
  whichever corpus or shard directory it is read from. `all` scores every document.
- `val_fraction` comes from the manifest of the shards the model was trained on (or of the
  prepared directory read); without one, prepare's default.
- A prepared directory (one holding manifest.json) can be read as well as a corpus: its
  `train` / `val` shards are the splits, and the raw bytes are the documents.
- `limit` counts documents of the chosen split, not documents read.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxylm.data.corpus import Corpus, Document, Split, iter_split, open_corpus
from proxylm.errors import UserError


class EvalSplit(enum.Enum):
    """The documents an evaluation scores."""

    VAL = "val"  # held out by prepare's hash split: the default
    TRAIN = "train"
    ALL = "all"

    def splits(self) -> tuple[Split, ...]:
        return tuple(Split) if self is EvalSplit.ALL else (Split(self.value),)


def default_val_fraction() -> float:
    from proxylm.data.prepare import PrepareConfig

    return PrepareConfig.val_fraction


def is_prepared(source: str | Path) -> bool:
    from proxylm.data.shards import MANIFEST

    return Path(source).is_dir() and (Path(source) / MANIFEST).is_file()


@dataclass
class EvalDocuments:
    """Iterate for the chosen split's documents; `skipped_counts()` after a pass, as a Corpus has."""

    source: str
    split: EvalSplit
    val_fraction: float
    limit: int | None = None
    text_field: str = "text"
    _corpus: Corpus | None = field(default=None, init=False, repr=False)

    def __iter__(self) -> Iterator[Document]:
        return itertools.islice(self._documents(), self.limit)

    def _documents(self) -> Iterator[Document]:
        if is_prepared(self.source):
            yield from self._from_shards()
            return
        self._corpus = open_corpus(self.source, field=self.text_field)
        if self.split is EvalSplit.ALL:
            yield from self._corpus
        else:
            yield from iter_split(self._corpus, Split(self.split.value), self.val_fraction)

    def _from_shards(self) -> Iterator[Document]:
        from proxylm.data.shards import Shards

        for split in self.split.splits():
            shards = Shards.open(self.source, split.value)
            for i in range(len(shards)):
                yield Document(shards.doc_id(i), shards.raw(i).tobytes())

    def skipped_counts(self) -> dict[str, int]:
        return self._corpus.skipped_counts() if self._corpus is not None else {}

    def describe(self) -> dict[str, Any]:
        """What a result records about the documents it scored."""
        return {"split": self.split.value, "val_fraction": self.val_fraction}

    def nothing_to_score(self, skipped: dict[str, Any]) -> UserError:
        """The error for a pass that yielded no document, with the way out."""
        hint = ""
        if self.split is not EvalSplit.ALL:
            hint = (f"; --split {self.split.value} keeps the documents whose id hashes into it (val_fraction "
                    f"{self.val_fraction}): pass --split all to score a file kept apart for evaluation")
        return UserError(f"--corpus {self.source}: no document in split '{self.split.value}' to score "
                         f"(skipped: {skipped or 'none'}){hint}")


def open_eval_documents(
    source: str | Path,
    split: EvalSplit = EvalSplit.VAL,
    val_fraction: float | None = None,
    limit: int | None = None,
    field: str = "text",
) -> EvalDocuments:
    """The documents of `split` in a corpus or a prepared directory (its own manifest's val_fraction)."""
    source = str(source)
    if is_prepared(source):
        from proxylm.data.shards import read_manifest

        val_fraction = read_manifest(Path(source))["val_fraction"]
    elif val_fraction is None:
        val_fraction = default_val_fraction()
    return EvalDocuments(source, split, float(val_fraction), limit, field)



def sample_heldout_pieces(
    corpus: str, val_fraction: float, piece_bytes: int | None, docs: int, max_bytes: int | None = None, salt: str = "study-eval"
) -> list[tuple[str, bytes]]:
    """A hash sample of `docs` pieces of the corpus's val split, cut as training cuts documents
    (`piece_bytes`), each at most `max_bytes`: held-out text that looks like what the model trained
    on, spread over every held-out file rather than their first lines. The study and the demo
    score on it."""
    from proxylm.data.corpus import cut_pieces, sample_documents
    from proxylm.probes.stability import truncate_utf8

    val = iter_split(open_corpus(corpus), Split.VAL, val_fraction)
    pieces = (piece for doc in val for piece in cut_pieces(doc, piece_bytes) if piece.data.strip())
    sample = sample_documents(pieces, salt=salt, max_docs=docs)
    if not sample:
        raise UserError(f"corpus '{corpus}' has no val documents at val_fraction={val_fraction}; raise it")
    return [(d.key, d.data if max_bytes is None else truncate_utf8(d.data, max_bytes)) for d in sample]
