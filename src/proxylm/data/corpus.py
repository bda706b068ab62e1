"""Corpus readers: a lazy, deterministic stream of documents (id, UTF-8 bytes).

    corpus = open_corpus("data/*.jsonl", field="text")
    for doc in corpus:            # Document(id="part-0.jsonl:17", data=b"...")
        ...
    corpus.skipped                # Counter {SkipReason.NOT_JSON: 3, ...} of the last pass

Design choices:
- Sources: lingua-style JSONL (`{"text": ...}` per line, plain or .gz), a directory or glob of
  source files (one file = one document), parquet (streamed by record batch with pyarrow), and
  `stdlib`: the .py files of the running Python's standard library (site-packages excluded), so
  every machine has real code to try things on.
- `hf:PATH[:split]`: a local Hugging Face dataset, either a `save_to_disk` folder (memory-mapped
  with `load_from_disk`) or a folder of data files (`load_dataset(PATH, streaming=True)`: no
  cache is built). Nothing is downloaded. A dataset with several splits reads `split`, else
  `train`; row ids are `PATH:split#row` (relative like file ids) unless the row has an `id`.
- Files are read in sorted order and ids are relative to the corpus root, so a corpus yields the
  same documents with the same ids on every run and every machine.
- Document id: the file's relative path (source files), `path:line` (JSONL) or `path#row`
  (parquet), unless the record has an `id` field. The train/validation split is a hash of the id
  (blake2b), so a document keeps its split when others are added or removed.
- Bad input is never fatal by default and never silent: each bad document is skipped and counted
  by reason; `strict=True` turns the first one into a CorpusError naming file and line.
- A document is "empty" when it holds only whitespace: it teaches a model nothing.
- Streaming throughout: memory is one document (or one parquet record batch) at a time.
- Pieces (`cut_pieces`): `prepare` cuts a long document into pieces of at most `max_piece_bytes`,
  at line ends where there are lines, into near-equal parts (no crumbs at the end). Each piece
  keeps its document's id, so the split, a hash of that id, puts every piece of a document on
  the same side; a piece's own key is `id@k`. Training then mixes many pieces per batch instead
  of one long file filling dozens of consecutive batches (DESIGN.md section 5).
"""

from __future__ import annotations

import collections
import enum
import glob
import gzip
import hashlib
import heapq
import json
import os
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxylm.errors import UserError

DEFAULT_MAX_DOC_BYTES = 1 << 20  # 1 MiB: the largest stdlib module (pydoc topics) is ~0.75 MB
# 4 KiB pieces: ~1,400 BPE tokens, so a translation pair of a whole piece (~5.5k positions) fits an
# 8k context and several fit the paper's 16k rows; code files have a median of ~6.5 KB (stdlib), so
# most documents stay one or two pieces. Runs with short rows (512-position CPU configs) prepare
# with shorter pieces, so that their pairs fit a row.
DEFAULT_MAX_PIECE_BYTES = 4096
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)
GLOB_CHARS = "*?["
HF_PREFIX = "hf:"
HF_DEFAULT_SPLIT = "train"


class CorpusError(UserError, ValueError):
    """A corpus that cannot be read, or (with strict) a bad document; the message names file and line."""


class CorpusKind(enum.Enum):
    AUTO = "auto"  # decided from the source: `stdlib`, file suffixes, or a directory
    JSONL = "jsonl"
    FILES = "files"
    PARQUET = "parquet"
    STDLIB = "stdlib"
    HF = "hf"  # a local Hugging Face dataset: `hf:PATH[:split]`


class Split(enum.Enum):
    TRAIN = "train"
    VAL = "val"


class SkipReason(enum.Enum):
    """Why a document was skipped; the value is the key used in manifests and summaries."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    NOT_STRING = "not_string"
    INVALID_UTF8 = "invalid_utf8"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class Document:
    id: str  # stable across runs: relative path, path:line, path#row, or the record's own id
    data: bytes  # valid UTF-8, not blank (a piece may be blank)
    piece: int | None = None  # index of this piece within its document; None: the whole document

    @property
    def key(self) -> str:
        """The id a shard stores: the document's id, or `id@k` for its k-th piece."""
        return self.id if self.piece is None else f"{self.id}@{self.piece}"


@dataclass
class CorpusConfig:
    source: str
    """`stdlib`, a JSONL file or glob, a directory or glob of source files, a parquet file, or
    `hf:PATH[:split]` (a local Hugging Face dataset folder)."""
    kind: CorpusKind = CorpusKind.AUTO
    """Force how the source is read; `auto` decides from suffixes (.jsonl[.gz], .ndjson, .parquet)."""
    field: str = "text"
    """JSONL / parquet: the field holding the document text."""
    id_field: str = "id"
    """JSONL / parquet: a field holding a stable document id, used when present (else path:line)."""
    max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES
    """Documents larger than this (in UTF-8 bytes) are skipped as `too_large`."""
    strict: bool = False
    """Raise on the first bad document instead of skipping and counting it."""
    limit: int | None = None
    """Stop after this many accepted documents (None: the whole corpus)."""

    def __post_init__(self) -> None:
        self.source = str(self.source)
        if not self.source.strip():
            raise CorpusError("corpus source is empty; give a path, a glob or `stdlib`")
        if not isinstance(self.kind, CorpusKind):
            self.kind = CorpusKind(self.kind)
        if not self.field:
            raise CorpusError("corpus field must be a non-empty name (e.g. --field text)")
        if self.max_doc_bytes < 1:
            raise CorpusError(f"max_doc_bytes must be >= 1, got {self.max_doc_bytes}")
        if self.limit is not None and self.limit < 1:
            raise CorpusError(f"limit must be >= 1 or None, got {self.limit}")


@dataclass(frozen=True)
class Source:
    """A resolved corpus: what kind, which files (sorted), and the root ids are relative to."""

    kind: CorpusKind
    files: tuple[Path, ...]
    root: Path

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


Reject = Callable[[SkipReason, str, str], None]  # (reason, where "file:line", detail)


class Skips(collections.Counter):
    """Bad documents counted by reason; with `strict`, the first one is a CorpusError naming it."""

    def __init__(self, strict: bool = False) -> None:
        super().__init__()
        self.strict = strict

    def reject(self, reason: SkipReason, where: str, detail: str) -> None:
        if self.strict:
            raise CorpusError(f"{where}: {detail} (skipped and counted as '{reason.value}' without --strict)")
        self[reason] += 1

    def counts(self) -> dict[str, int]:
        """Every reason with its count (zeros included, so the keys are always the same)."""
        return {reason.value: self.get(reason, 0) for reason in SkipReason}


class Corpus:
    """Iterate to stream documents; `skipped` counts the bad ones of the latest pass by reason."""

    def __init__(self, config: CorpusConfig) -> None:
        self.config = config
        self.source = resolve_source(config)
        self.skipped = Skips(config.strict)
        self.documents_read = 0

    def __iter__(self) -> Iterator[Document]:
        self.skipped = Skips(self.config.strict)
        self.documents_read = 0
        for doc in self._read_all():
            self.documents_read += 1
            yield doc
            if self.config.limit is not None and self.documents_read >= self.config.limit:
                return

    def _read_all(self) -> Iterator[Document]:
        reader = READERS[self.source.kind]
        for path in self.source.files:
            yield from reader(path, self.source.rel(path), self.config, self._reject)

    def _reject(self, reason: SkipReason, where: str, detail: str) -> None:
        self.skipped.reject(reason, where, detail)  # the latest pass's counter

    def skipped_counts(self) -> dict[str, int]:
        """Every reason with its count (zeros included, so the keys are always the same)."""
        return self.skipped.counts()

    def size_hint(self) -> int:
        """Total size of the source files in bytes: a progress-bar total, exact for source files."""
        return sum(_file_size(p) for p in self.source.files)

    def describe(self) -> dict[str, Any]:
        """What a manifest records about where the documents came from."""
        info: dict[str, Any] = {
            "source": self.config.source,
            "kind": self.source.kind.value,
            "root": str(self.source.root),
            "files": len(self.source.files),
            "field": self.config.field,
            "max_doc_bytes": self.config.max_doc_bytes,
            "limit": self.config.limit,
        }
        if self.source.kind is CorpusKind.STDLIB:
            info["python"] = sys.version.split()[0]
        return info


def open_corpus(source: str | Path | CorpusConfig, **options: Any) -> Corpus:
    """A corpus from a source string (plus CorpusConfig fields as keywords) or a ready config."""
    config = source if isinstance(source, CorpusConfig) else CorpusConfig(source=str(source), **options)
    return Corpus(config)


# ---- splits and deterministic samples ----------------------------------------------------------


def hash_unit(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1) from a string: the same on every machine and Python version."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=salt.encode("utf-8")[:16]).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def split_of(doc_id: str, val_fraction: float) -> Split:
    return Split.VAL if hash_unit(doc_id, "split") < val_fraction else Split.TRAIN


def iter_split(docs: Iterable[Document], split: Split, val_fraction: float) -> Iterator[Document]:
    return (doc for doc in docs if split_of(doc.id, val_fraction) is split)


def sample_documents(
    docs: Iterable[Document], *, salt: str, max_docs: int | None = None, max_bytes: int | None = None
) -> list[Document]:
    """A seeded uniform sample in one streaming pass, bounded in count and bytes.

    Keeps the documents with the smallest hash_unit(id, salt) that fit both bounds (a bottom-k
    sample); once a document is evicted, any document ranked after it is refused, so the result
    is always a prefix of the hash order. Returned in that order.
    """
    heap: list[tuple[float, int, Document]] = []  # (-key, tiebreak, doc): a max-heap on key
    total = 0
    cutoff = float("inf")
    for n, doc in enumerate(docs):
        key = hash_unit(doc.id, salt)
        if key >= cutoff:
            continue
        heapq.heappush(heap, (-key, n, doc))
        total += len(doc.data)
        while heap and ((max_docs is not None and len(heap) > max_docs) or (max_bytes is not None and total > max_bytes)):
            neg_key, _, evicted = heapq.heappop(heap)
            total -= len(evicted.data)
            cutoff = min(cutoff, -neg_key)
    return [doc for _, _, doc in sorted(heap, key=lambda item: -item[0])]


# ---- pieces ------------------------------------------------------------------------------------


def cut_pieces(doc: Document, max_piece_bytes: int | None) -> list[Document]:
    """The document itself if it fits, else its pieces of at most `max_piece_bytes` bytes (in order).

    A document of n bytes becomes k = ceil(n / max) pieces of about n / k bytes each: each cut is
    made after the last newline between half and all of that target, else after the first newline
    up to the cap, else at a character boundary near the target.
    """
    data = doc.data
    if not max_piece_bytes or len(data) <= max_piece_bytes:
        return [doc]
    pieces, start = [], 0
    while start < len(data):
        end = _piece_end(data, start, max_piece_bytes)
        pieces.append(Document(id=doc.id, data=data[start:end], piece=len(pieces)))
        start = end
    return pieces


def _piece_end(data: bytes, start: int, cap: int) -> int:
    remaining = len(data) - start
    if remaining <= cap:
        return len(data)
    target = start + -(-remaining // -(-remaining // cap))  # ceil(remaining / ceil(remaining / cap))
    newline = data.rfind(b"\n", start + (target - start) // 2, target)
    if newline < 0:
        newline = data.find(b"\n", target, start + cap)
    if newline >= 0:
        return newline + 1
    end = target
    while end > start + 1 and (data[end] & 0xC0) == 0x80:  # never cut inside a UTF-8 character
        end -= 1
    return end


# ---- resolving a source ------------------------------------------------------------------------


def resolve_source(config: CorpusConfig) -> Source:
    text = config.source
    if config.kind is CorpusKind.STDLIB or (config.kind is CorpusKind.AUTO and text == "stdlib"):
        return _stdlib_source()
    if config.kind is CorpusKind.HF or text.startswith(HF_PREFIX):
        return _hf_source(text)
    path = Path(text).expanduser()
    if path.is_dir():
        files = _walk(path)
        root = path
    elif path.is_file():
        files = [path]
        root = path.parent
    elif any(ch in text for ch in GLOB_CHARS):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise CorpusError(f"corpus glob '{text}' matched no files")
        root = _glob_root(path)
    else:
        raise CorpusError(f"corpus not found: '{text}' is not a file, a directory, a glob or `stdlib`")
    if not files:
        raise CorpusError(f"corpus directory '{text}' holds no files")
    kind = config.kind if config.kind is not CorpusKind.AUTO else _kind_from_suffixes(files)
    return Source(kind=kind, files=tuple(files), root=root)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_source() -> Source:
    root = stdlib_root()
    files = [p for p in _walk(root, prune={"site-packages", "dist-packages"}) if p.suffix == ".py"]
    if not files:
        raise CorpusError(f"no .py files found in the standard library at {root}")
    return Source(kind=CorpusKind.STDLIB, files=tuple(files), root=root)


def parse_hf_source(text: str) -> tuple[Path, str | None]:
    """`hf:PATH[:split]` (the prefix optional) -> (PATH, split or None); a PATH that exists wins."""
    rest = text[len(HF_PREFIX):] if text.startswith(HF_PREFIX) else text
    path = Path(rest).expanduser()
    if not path.exists() and ":" in rest:
        head, _, split = rest.rpartition(":")
        return Path(head).expanduser(), split or None
    return path, None


def _hf_source(text: str) -> Source:
    path, _ = parse_hf_source(text)
    if not path.is_dir():
        raise CorpusError(
            f"corpus '{text}': {path} is not a directory; hf: takes a folder written by save_to_disk or a "
            "folder of data files (give a single JSONL or parquet file without the hf: prefix)"
        )
    return Source(kind=CorpusKind.HF, files=(path,), root=path.parent)


def _walk(directory: Path, prune: frozenset[str] | set[str] = frozenset()) -> list[Path]:
    """Regular files under a directory in a fixed order (names sorted at each level), skipping
    hidden files and directories (.git, ...), __pycache__ and any directory named in `prune`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__" and d not in prune)
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames) if not name.startswith("."))
    return [Path(p) for p in found if os.path.isfile(p)]


def _glob_root(pattern: Path) -> Path:
    parts = []
    for part in pattern.parts:
        if any(ch in part for ch in GLOB_CHARS):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _kind_from_suffixes(files: list[Path]) -> CorpusKind:
    names = [p.name.lower() for p in files]
    if all(name.endswith(JSONL_SUFFIXES) for name in names):
        return CorpusKind.JSONL
    if all(name.endswith(PARQUET_SUFFIXES) for name in names):
        return CorpusKind.PARQUET
    return CorpusKind.FILES


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---- readers: one per kind, each yields accepted documents and reports rejects -----------------


def accept_text(text: Any, where: str, config: CorpusConfig, reject: Reject) -> bytes | None:
    """The bytes of a text field, or None after reporting why it is not a usable document."""
    if text is None:
        reject(SkipReason.MISSING_FIELD, where, f"field '{config.field}' is missing or null")
        return None
    if isinstance(text, (bytes, bytearray)):
        data = bytes(text)
        if not _valid_utf8(data, where, reject):
            return None
    elif isinstance(text, str):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from \ud800-style escapes
            reject(SkipReason.INVALID_UTF8, where, f"field '{config.field}' is not valid Unicode (lone surrogate)")
            return None
    else:
        reject(SkipReason.NOT_STRING, where, f"field '{config.field}' is a {type(text).__name__}, not a string")
        return None
    return _accept_bytes(data, where, config, reject)


def _accept_bytes(data: bytes, where: str, config: CorpusConfig, reject: Reject) -> bytes | None:
    if len(data) > config.max_doc_bytes:
        reject(SkipReason.TOO_LARGE, where, f"document of {len(data)} bytes is over the cap of {config.max_doc_bytes}")
        return None
    if not data.strip():
        reject(SkipReason.EMPTY, where, "empty document")
        return None
    return data


def _valid_utf8(data: bytes, where_file: str, reject: Reject) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = where_file if ":" in where_file or "#" in where_file else f"{where_file}:{line}"
        reject(SkipReason.INVALID_UTF8, where, f"invalid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})")
        return False
    return True


def _stable_id(value: Any, default: str) -> str:
    """A record's own id when it has a usable one (a string or an integer), else the default."""
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else default


def read_files(path: Path, rel: str, config: CorpusConfig, reject: Reject) -> Iterator[Document]:
    """One source file = one document; the size cap is checked before the file is read."""
    size = _file_size(path)
    if size > config.max_doc_bytes:
        reject(SkipReason.TOO_LARGE, f"{path}:1", f"file of {size} bytes is over the cap of {config.max_doc_bytes}")
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        reject(SkipReason.UNREADABLE, f"{path}:1", f"cannot read: {exc.strerror or exc}")
        return
    if not _valid_utf8(data, str(path), reject):
        return
    accepted = _accept_bytes(data, f"{path}:1", config, reject)
    if accepted is not None:
        yield Document(id=rel, data=accepted)


def read_jsonl(path: Path, rel: str, config: CorpusConfig, reject: Reject) -> Iterator[Document]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        fh = opener(path, "rb")
    except OSError as exc:
        reject(SkipReason.UNREADABLE, f"{path}:1", f"cannot open: {exc.strerror or exc}")
        return
    with fh:
        for lineno, line in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            if not line.strip():
                reject(SkipReason.EMPTY, where, "blank line")
                continue
            record = _parse_json_line(line, where, reject)
            if record is None:
                continue
            data = accept_text(record.get(config.field), where, config, reject)
            if data is not None:
                yield Document(id=_stable_id(record.get(config.id_field), f"{rel}:{lineno}"), data=data)


def _parse_json_line(line: bytes, where: str, reject: Reject) -> dict | None:
    try:
        record = json.loads(line)
    except UnicodeDecodeError as exc:
        reject(SkipReason.INVALID_UTF8, where, f"invalid UTF-8 in the line ({exc.reason})")
        return None
    except ValueError as exc:
        reject(SkipReason.NOT_JSON, where, f"not valid JSON ({exc})")
        return None
    if not isinstance(record, dict):
        reject(SkipReason.NOT_OBJECT, where, f"a JSON {type(record).__name__}, not an object")
        return None
    return record


def read_parquet(path: Path, rel: str, config: CorpusConfig, reject: Reject) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on a bad file
        reject(SkipReason.UNREADABLE, f"{path}", f"not a readable parquet file: {exc}")
        return
    names = pf.schema_arrow.names
    if config.field not in names:
        raise CorpusError(f"{path}: no column '{config.field}' (columns: {', '.join(names)}); choose one with --field")
    columns = [config.field] + ([config.id_field] if config.id_field in names else [])
    row = 0
    for batch in pf.iter_batches(batch_size=256, columns=columns):
        texts = batch.column(config.field).to_pylist()
        ids = batch.column(config.id_field).to_pylist() if len(columns) > 1 else [None] * len(texts)
        for text, doc_id in zip(texts, ids):
            where = f"{path}#{row}"
            data = accept_text(text, where, config, reject)
            if data is not None:
                yield Document(id=_stable_id(doc_id, f"{rel}#{row}"), data=data)
            row += 1


def read_hf(path: Path, rel: str, config: CorpusConfig, reject: Reject) -> Iterator[Document]:
    """Rows of a local Hugging Face dataset, by record batch, with the same checks as parquet rows."""
    dataset, split = _open_hf(path, parse_hf_source(config.source)[1])
    names = dataset.column_names
    if names is not None and config.field not in names:
        raise CorpusError(f"{path}: no column '{config.field}' (columns: {', '.join(names)}); choose one with --field")
    columns = [config.field] + ([config.id_field] if names and config.id_field in names else [])
    label = rel if split is None else f"{rel}:{split}"
    full = str(path) if split is None else f"{path}:{split}"
    row = 0
    for batch in _hf_batches(dataset.select_columns(columns), full, reject):
        texts = batch[config.field]
        for text, doc_id in zip(texts, batch.get(config.id_field, [None] * len(texts))):
            data = accept_text(text, f"{full}#{row}", config, reject)
            if data is not None:
                yield Document(id=_stable_id(doc_id, f"{label}#{row}"), data=data)
            row += 1


def _open_hf(path: Path, split: str | None) -> tuple[Any, str | None]:
    """The dataset in a folder and the split read (None: a single dataset without splits)."""
    import datasets

    saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
    try:
        data = datasets.load_from_disk(str(path)) if saved else datasets.load_dataset(str(path), streaming=True)
    except (datasets.exceptions.DatasetsError, ValueError, OSError) as exc:
        raise CorpusError(f"{path}: not a readable Hugging Face dataset ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split is not None:
            raise CorpusError(f"{path}: a single dataset saved without splits; drop ':{split}' from the source")
        return data, None
    splits = list(data)
    chosen = split or (HF_DEFAULT_SPLIT if HF_DEFAULT_SPLIT in data else splits[0] if len(splits) == 1 else None)
    if chosen not in data:
        wanted = f"no split '{split}'" if split else "several splits"
        raise CorpusError(f"{path}: {wanted} (splits: {', '.join(splits)}); choose one with hf:{path}:SPLIT")
    return data[chosen], chosen


def _hf_batches(dataset: Any, where: str, reject: Reject) -> Iterator[dict[str, list]]:
    """Column batches; a data file that datasets cannot parse ends the read, counted as unreadable."""
    import datasets

    batches = iter(dataset.iter(batch_size=256))
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (datasets.exceptions.DatasetsError, ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            reject(SkipReason.UNREADABLE, where, f"datasets cannot read the rest of it: {exc}")
            return
        yield batch


READERS: dict[CorpusKind, Callable[[Path, str, CorpusConfig, Reject], Iterator[Document]]] = {
    CorpusKind.JSONL: read_jsonl,
    CorpusKind.FILES: read_files,
    CorpusKind.STDLIB: read_files,
    CorpusKind.PARQUET: read_parquet,
    CorpusKind.HF: read_hf,
}
