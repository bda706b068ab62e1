"""`bpe`: byte-level BPE trained with HF `tokenizers`, encoded with `tiktoken`; symbols = token ids.

Design choices:
- Bytes, not text. `tokenizers` works on str, so each byte becomes one character before the
  tokenizer sees it: ASCII maps to itself (so the pre-tokenizer's whitespace, digit and
  punctuation classes work as usual) and 0x80..0xFF map to U+0100..U+017F, which are all
  letters, so the bytes of a UTF-8 word (or of binary junk) group like the letters of a word.
  Every byte string therefore round-trips, invalid UTF-8 and NULs included.
- The 256 byte characters are the initial alphabet and there are no special tokens, so ids
  0..alphabet_size-1 are all real tokens and any input encodes without an unknown token.
- Pre-tokenizer: the GPT-4 (cl100k) split regex, which keeps merges inside words, numbers of up
  to 3 digits, punctuation runs and whitespace runs (code indentation becomes few tokens).
- HF `tokenizers` trains and owns the file format; `tiktoken` encodes (3-4x the MB per
  CPU-second on code). It is built from the trained tokenizer: mergeable ranks = {UTF-8 of the
  token's byte characters: id}, pat_str = the same split pattern. The HF trainer numbers the 256
  byte tokens 0..255 and each merge's result with the next id, so an id is its merge's priority
  (`fast_encoder` checks this; a tokenizer where it fails keeps HF's encoder).
- The two encoders differ in one rule: tiktoken merges the adjacent pair whose concatenation
  has the lowest id (and takes a piece that is a whole token at once), HF only pairs listed as
  merges. They can part only where a token is also the concatenation of two other tokens that
  training never merged and those two meet while encoding. Ids were identical on the whole
  stdlib, 88 MB of other code, text, random bytes and binaries, and 39k documents under tiny
  trained vocabularies; either way the encoding is lossless (decoding only concatenates token
  bytes), and `reference_encode` runs HF's encoder for checks.
- tiktoken works on UTF-8 text, so a byte character U+0100..U+017F arrives as two UTF-8 bytes;
  those lone bytes get ranks above the alphabet, and since every 2-byte character is a token with
  a lower rank than any merge, each pair recombines first and a lone byte is never emitted.
- Decoding does not use the tokenizer: a flat table of every token's bytes plus offsets, and
  one vectorised gather.
- `vocab` is the training target; a small corpus may stop with fewer merges, and the alphabet
  is the trained tokenizer's real size.
- Training streams the documents (`train_from_iterator`); wrap them in tqdm to see progress.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from proxylm.compress.base import Compressor, CompressorError
from proxylm.compress.base import check_symbols
from proxylm.io import atomic_path
from proxylm.vocab import id_dtype

TOKENIZER_FILE = "tokenizer.json"

# GPT-4's cl100k split pattern (tiktoken), as used by the HF byte-level tokenizers.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_CODEPOINTS = np.arange(256, dtype=np.uint32)
_CODEPOINTS[128:] += 0x100 - 0x80  # bytes 0x80..0xFF -> U+0100..U+017F (letters)
BYTE_CHARS = [chr(c) for c in _CODEPOINTS]
_CHAR_TO_BYTE = {ch: b for b, ch in enumerate(BYTE_CHARS)}


def bytes_to_text(data: bytes) -> str:
    """One character per byte (see the module docstring); exact inverse of `text_to_bytes`."""
    if data.isascii():  # ASCII maps to itself: most source code skips the table
        return data.decode("ascii")
    return _CODEPOINTS[np.frombuffer(data, dtype=np.uint8)].tobytes().decode("utf-32-le")


def text_to_bytes(text: str) -> bytes:
    try:
        return bytes(_CHAR_TO_BYTE[ch] for ch in text)
    except KeyError as exc:
        raise CompressorError(f"bpe: character {exc.args[0]!r} is not one of the 256 byte characters") from None


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated")


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CompressorError(f"bpe: {name} must be an integer >= {low}, got {value!r}")
    return value


class BPECompressor(Compressor):
    name = "bpe"
    trainable = True

    def __init__(self, *, vocab: int = 8192, min_frequency: int = 2, path: str | Path | None = None) -> None:
        self.vocab = _check_int("vocab", vocab, 256)  # training target incl. the 256 byte tokens; unused with path
        self.min_frequency = _check_int("min_frequency", min_frequency, 0)  # rarer pairs are never merged
        self.path = None if path is None else str(path)  # a saved tokenizer.json to load instead of fitting
        self.file: str | None = None  # set when loaded from a shard directory's saved config
        self._tokenizer: Tokenizer | None = None
        self._fast: tiktoken.Encoding | None = None  # the encoder; None keeps HF's (see fast_encoder)
        self._pool: ThreadPoolExecutor | None = None  # encode_many's threads, started on first use
        if self.path is not None:
            self._use(self._read(Path(self.path)))

    @property
    def ready(self) -> bool:
        return self._tokenizer is not None

    @property
    def alphabet_size(self) -> int:
        self._require()
        return self._offsets.size - 1

    @property
    def tokenizer(self) -> Tokenizer:
        """The underlying HF tokenizer (over byte characters, see `bytes_to_text`)."""
        return self._require()

    def token_bytes(self) -> list[bytes]:
        """The byte string of every token, indexed by id."""
        self._require()
        flat = self._flat.tobytes()
        return [flat[a:b] for a, b in zip(self._offsets[:-1].tolist(), self._offsets[1:].tolist())]

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"name": self.name, "vocab": self.vocab, "min_frequency": self.min_frequency}
        if self.path is not None:
            config["path"] = self.path
        if self.file is not None:
            config["file"] = self.file
        return config

    def fit(self, docs: Iterable[bytes]) -> None:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = _pre_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab,
            min_frequency=self.min_frequency,
            initial_alphabet=BYTE_CHARS,
            special_tokens=[],
            show_progress=False,
        )
        length = len(docs) if hasattr(docs, "__len__") else None
        tokenizer.train_from_iterator((bytes_to_text(doc) for doc in docs), trainer, length=length)
        self.path = self.file = None
        self._use(tokenizer)

    def save(self, directory: Path) -> dict[str, Any]:
        tokenizer = self._require()
        with atomic_path(Path(directory) / TOKENIZER_FILE) as tmp:
            tokenizer.save(str(tmp))
        config = {k: v for k, v in self.config().items() if k != "path"}
        return config | {"file": TOKENIZER_FILE}

    @classmethod
    def load(cls, config: dict[str, Any], directory: Path) -> "BPECompressor":
        params = {k: v for k, v in config.items() if k not in ("name", "file")}
        if "file" not in config:
            return cls(**params)
        compressor = cls(**{k: v for k, v in params.items() if k != "path"})
        compressor._use(cls._read(Path(directory) / config["file"]))
        compressor.file = config["file"]
        return compressor

    @staticmethod
    def _read(path: Path) -> Tokenizer:
        if not path.is_file():
            raise CompressorError(f"bpe: tokenizer file {path} does not exist")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise CompressorError(f"bpe: cannot read tokenizer file {path}: {exc}") from None
        problem = _layout_problem(tokenizer)
        if problem:
            raise CompressorError(f"bpe: tokenizer file {path} was not written by proxylm's bpe compressor: {problem}")
        return tokenizer

    def _use(self, tokenizer: Tokenizer) -> None:
        """Adopt a tokenizer and build the decode tables (flat bytes + offsets, indexed by id)."""
        by_id = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
        pieces = [text_to_bytes(token) for token, _ in by_id]
        self._flat = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        self._offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=self._offsets[1:])
        self._dtype = id_dtype(len(pieces))
        self._tokenizer = tokenizer
        self._fast = fast_encoder(tokenizer)

    def _require(self) -> Tokenizer:
        if self._tokenizer is None:
            raise CompressorError("bpe: the tokenizer is not trained; fit it on documents or load one with path=FILE")
        return self._tokenizer

    @property
    def fast(self) -> bool:
        """Whether `encode` runs tiktoken (True for every tokenizer this compressor trains)."""
        self._require()
        return self._fast is not None

    def encode(self, data: bytes) -> np.ndarray:
        self._require()
        if self._fast is None:
            return self.reference_encode(data)
        return np.array(self._fast.encode_ordinary(bytes_to_text(data)), dtype=self._dtype)

    def encode_many(self, docs: Iterable[bytes]) -> list[np.ndarray]:
        """Encode many documents at once, spread over threads (tiktoken releases the GIL)."""
        tokenizer = self._require()
        texts = [bytes_to_text(doc) for doc in docs]
        if self._fast is None:
            return [np.array(e.ids, dtype=self._dtype) for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
        threads = min(len(texts), _cpus())
        if threads <= 1:
            return self._encode_group(texts)
        # One contiguous group per thread: a task per document (tiktoken's encode_ordinary_batch)
        # costs more Python than a short document's encoding.
        bounds = np.searchsorted(np.cumsum([len(t) for t in texts]), np.arange(1, threads) * sum(map(len, texts)) / threads)
        groups = [texts[a:b] for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), len(texts)])]
        return [ids for group in self._threads().map(self._encode_group, groups) for ids in group]

    def _encode_group(self, texts: list[str]) -> list[np.ndarray]:
        encode = self._fast.encode_ordinary
        return [np.array(encode(text), dtype=self._dtype) for text in texts]

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_cpus(), thread_name_prefix="bpe")
        return self._pool

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_pool": None}

    def reference_encode(self, data: bytes) -> np.ndarray:
        """`encode` with HF `tokenizers` (the trainer's own BPE), to check the fast path against."""
        ids = self._require().encode(bytes_to_text(data), add_special_tokens=False).ids
        return np.array(ids, dtype=self._dtype)

    def decode(self, symbols: np.ndarray | list[int], side: np.ndarray | None = None) -> bytes:
        ids = check_symbols(symbols, self.alphabet_size, self.name)  # (T,)
        starts = self._offsets[ids]  # (T,)
        lengths = self._offsets[ids + 1] - starts  # (T,)
        out_starts = np.cumsum(lengths) - lengths  # (T,) where each token lands in the output
        gather = np.repeat(starts - out_starts, lengths) + np.arange(int(lengths.sum()))  # (N,)
        return self._flat[gather].tobytes()


def fast_encoder(tokenizer: Tokenizer) -> tiktoken.Encoding | None:
    """tiktoken over the same tokens and split pattern, or None if HF's ids are not merge priorities.

    tiktoken ranks merges by the id of their result, so the ids must be in merge order: the 256
    byte tokens are 0..255 and merge k makes token 256 + k (true of every HF-trained tokenizer
    without duplicate merges).
    """
    spec = json.loads(tokenizer.to_str())["model"]
    vocab = spec["vocab"]
    merges = spec["merges"]
    if any(vocab.get(ch) != b for b, ch in enumerate(BYTE_CHARS)) or len(merges) != len(vocab) - 256:
        return None
    for k, merge in enumerate(merges):
        # Pairs are lists in the files tokenizers writes; the older "a b" strings cannot hold our
        # tokens (many contain a space), so such a file keeps HF's encoder.
        if not isinstance(merge, list) or vocab.get("".join(merge)) != 256 + k:
            return None
    ranks = {token.encode("utf-8"): i for token, i in vocab.items()}
    lone = sorted({bytes([b]) for ch in BYTE_CHARS[128:] for b in ch.encode("utf-8")})  # never emitted
    ranks.update((piece, len(vocab) + k) for k, piece in enumerate(lone))
    return tiktoken.Encoding("proxylm-bpe", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _layout_problem(tokenizer: Tokenizer) -> str | None:
    """Why a loaded tokenizer would not round-trip bytes exactly, or None if it will."""
    spec = json.loads(tokenizer.to_str())
    if spec.get("model", {}).get("type") != "BPE":
        return f"model is {spec.get('model', {}).get('type')!r}, not BPE"
    if spec.get("normalizer") is not None:
        return "it has a normalizer, which would change the bytes"
    if spec.get("added_tokens"):
        return "it has added/special tokens"
    if spec.get("pre_tokenizer") != json.loads(_pre_tokenizer_json()):
        return "its pre-tokenizer differs"
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    if sorted(vocab.values()) != list(range(len(vocab))):
        return "token ids are not contiguous from 0"
    if any(ch not in vocab for ch in BYTE_CHARS):
        return "some of the 256 byte tokens are missing"
    if any(ch not in _CHAR_TO_BYTE for token in vocab for ch in token):
        return "some tokens use characters outside the byte mapping"
    return None


def _pre_tokenizer_json() -> str:
    probe = Tokenizer(models.BPE())
    probe.pre_tokenizer = _pre_tokenizer()
    return json.dumps(json.loads(probe.to_str())["pre_tokenizer"])
