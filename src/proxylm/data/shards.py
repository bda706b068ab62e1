"""Prepared shards on disk: per document its raw bytes, compressed symbols and side information.

    DIR/manifest.json                      written last, atomically: its presence means complete
    DIR/<compressor files>                 whatever the compressor's `save` wrote (a BPE model, ...)
    DIR/train/shard-00000/raw.bin          uint8, documents' bytes back to back
    DIR/train/shard-00000/raw.idx.npy      int64 offsets, n + 1 of them
    DIR/train/shard-00000/sym.bin          symbols in the smallest unsigned dtype for the alphabet
    DIR/train/shard-00000/sym.idx.npy
    DIR/train/shard-00000/side.bin, side.idx.npy    only when the compressor returns side info
    DIR/train/shard-00000/ids.json         document ids, in order
    DIR/train/shard-00000/meta.json        counts, dtypes, the run fingerprint and a content hash
    DIR/val/...

Design choices:
- Flat binary files + numpy offset arrays, opened with np.memmap: `raw(i)` and `symbols(i)` are
  zero-copy views, and opening a shard directory costs a few small reads (nanoGPT's .bin files).
- A shard is written into a hidden temporary directory and renamed into place when complete; a
  directory rename is atomic, so a shard either exists whole or not at all.
- Each shard records the fingerprint of the run that wrote it (compressor, options) and a hash
  of its documents (ids and bytes): a re-run reuses a shard only when both match.
- `Shards.open` trusts only what a complete manifest lists and checks every listed shard's
  fingerprint and content hash, so a killed or half-rewritten directory never loads.
- Shards are opened lazily: a split with many shards holds file handles only for those read.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from proxylm.errors import UserError
from proxylm.io import atomic_write_json

FORMAT = "proxylm-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_META = "meta.json"
TEMP_PREFIX = ".tmp-"


class ShardsError(UserError, ValueError):
    """A shard directory that is missing, incomplete or inconsistent; the message names it."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


class ContentHash:
    """Hash of a shard's documents (ids and bytes, length-prefixed so boundaries count), fed one at a time."""

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)

    def update(self, doc_id: str, data: bytes) -> None:
        key = doc_id.encode("utf-8")
        self._h.update(len(key).to_bytes(8, "little") + key + len(data).to_bytes(8, "little"))
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def content_hash(docs: Iterable[tuple[str, bytes]]) -> str:
    h = ContentHash()
    for doc_id, data in docs:
        h.update(doc_id, data)
    return h.hexdigest()


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None if it is missing or not a complete JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---- writing -----------------------------------------------------------------------------------


class ShardWriter:
    """Appends documents to a temporary shard directory; `finish` makes it appear whole."""

    def __init__(self, split_dir: Path, name: str, symbol_dtype: np.dtype, meta: dict[str, Any]) -> None:
        self.final = split_dir / name
        self.tmp = split_dir / f"{TEMP_PREFIX}{name}-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.symbol_dtype = np.dtype(symbol_dtype)
        self.side_dtype: np.dtype | None = None
        self.meta = dict(meta)
        self.ids: list[str] = []
        self.offsets = {"raw": [0], "sym": [0], "side": [0]}
        self.files = {kind: open(self.tmp / f"{kind}.bin", "wb") for kind in ("raw", "sym")}

    def add(self, doc_id: str, raw: bytes, symbols: np.ndarray, side: np.ndarray | None) -> None:
        self._check_side(doc_id, side)
        self._append("raw", np.frombuffer(raw, dtype=np.uint8))
        self._append("sym", np.ascontiguousarray(symbols, dtype=self.symbol_dtype))
        if side is not None:
            self._append("side", np.ascontiguousarray(side, dtype=self.side_dtype))
        self.ids.append(doc_id)

    def _check_side(self, doc_id: str, side: np.ndarray | None) -> None:
        has_side = self.side_dtype is not None
        if self.ids and has_side != (side is not None):
            raise ShardsError(f"document '{doc_id}': the compressor returned side information for some documents only")
        if not self.ids and side is not None:
            self.side_dtype = np.asarray(side).dtype
            self.files["side"] = open(self.tmp / "side.bin", "wb")

    def _append(self, kind: str, values: np.ndarray) -> None:
        self.files[kind].write(values.data)
        self.offsets[kind].append(self.offsets[kind][-1] + values.size)

    def finish(self) -> dict[str, Any]:
        """Write index and meta, fsync, and rename into place (replacing a stale shard)."""
        for kind, fh in self.files.items():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            np.save(self.tmp / f"{kind}.idx.npy", np.asarray(self.offsets[kind], dtype=np.int64))
        (self.tmp / "ids.json").write_text(json.dumps(self.ids))
        meta = {
            **self.meta,
            "documents": len(self.ids),
            "raw_bytes": self.offsets["raw"][-1],
            "symbols": self.offsets["sym"][-1],
            "symbol_dtype": self.symbol_dtype.name,
            "side_dtype": None if self.side_dtype is None else self.side_dtype.name,
        }
        atomic_write_json(self.tmp / SHARD_META, meta)
        if self.final.exists():
            shutil.rmtree(self.final)
        os.rename(self.tmp, self.final)
        return meta

    def abort(self) -> None:
        for fh in self.files.values():
            fh.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def remove_temporaries(split_dir: Path) -> None:
    """Delete half-written shards left by a killed run."""
    if split_dir.is_dir():
        for path in split_dir.glob(f"{TEMP_PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)


def finished_shard(split_dir: Path, name: str, fingerprint: str) -> dict[str, Any] | None:
    """The meta of a finished shard written by a run with this fingerprint, else None.

    It is reusable only if its `content` hash also equals that of the documents meant for it.
    """
    meta = read_json(split_dir / name / SHARD_META)
    return meta if meta and meta.get("fingerprint") == fingerprint else None


# ---- reading -----------------------------------------------------------------------------------


class _OpenShard:
    """One shard's memory maps and offsets."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.raw_idx = np.load(path / "raw.idx.npy")
        self.sym_idx = np.load(path / "sym.idx.npy")
        self.raw = _memmap(path / "raw.bin", np.uint8, int(self.raw_idx[-1]))
        self.sym = _memmap(path / "sym.bin", np.dtype(meta["symbol_dtype"]), int(self.sym_idx[-1]))
        self.side_idx = self.side = None
        if meta.get("side_dtype"):
            self.side_idx = np.load(path / "side.idx.npy")
            self.side = _memmap(path / "side.bin", np.dtype(meta["side_dtype"]), int(self.side_idx[-1]))
        self.ids: list[str] = json.loads((path / "ids.json").read_text())
        if not (len(self.ids) + 1 == len(self.raw_idx) == len(self.sym_idx)):
            raise ShardsError(f"{path}: index files disagree on the number of documents")


def _memmap(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    size = path.stat().st_size
    if size != count * np.dtype(dtype).itemsize:
        raise ShardsError(f"{path}: {size} bytes on disk, the index expects {count * np.dtype(dtype).itemsize}")
    if count == 0:  # np.memmap cannot map an empty file
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class Shards:
    """The documents of one split of a prepared directory, memory-mapped.

    `compressor_config` is the config `proxylm.compress.load` takes (manifest["compressor"]["config"]);
    the manifest's `compressor` section also holds the spec, alphabet size and dtypes.
    """

    def __init__(self, directory: Path, split: str, manifest: dict[str, Any]) -> None:
        self.directory = directory
        self.split = split
        self.manifest = manifest
        self.compressor_config: dict[str, Any] = manifest["compressor"]["config"]
        self.alphabet_size: int = int(manifest["compressor"]["alphabet_size"])
        entries = manifest["splits"][split]["shards"]
        self._metas = [_checked_shard_meta(directory / split, entry, manifest["fingerprint"]) for entry in entries]
        self._starts = np.cumsum([0] + [m["documents"] for m in self._metas]).tolist()  # first doc of each shard
        self._open: dict[int, _OpenShard] = {}

    @classmethod
    def open(cls, directory: str | Path, split: str = "train") -> "Shards":
        directory = Path(directory)
        manifest = read_manifest(directory)
        if split not in manifest["splits"]:
            raise ShardsError(f"{directory}: no split '{split}' (splits: {', '.join(manifest['splits'])})")
        return cls(directory, split, manifest)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into data-loader workers: send paths and indices, not memory maps (which would copy the data).
        return {k: v for k, v in self.__dict__.items() if k != "_open"} | {"_open": {}}

    def __len__(self) -> int:
        return self._starts[-1]

    def __repr__(self) -> str:
        return f"Shards({str(self.directory)!r}, split={self.split!r}, documents={len(self)})"

    def raw(self, i: int) -> np.ndarray:
        shard, j = self._locate(i)
        return shard.raw[shard.raw_idx[j] : shard.raw_idx[j + 1]]

    def symbols(self, i: int) -> np.ndarray:
        shard, j = self._locate(i)
        return shard.sym[shard.sym_idx[j] : shard.sym_idx[j + 1]]

    def side(self, i: int) -> np.ndarray | None:
        shard, j = self._locate(i)
        if shard.side is None:
            return None
        return shard.side[shard.side_idx[j] : shard.side_idx[j + 1]]

    def doc_id(self, i: int) -> str:
        shard, j = self._locate(i)
        return shard.ids[j]

    def raw_length(self, i: int) -> int:
        shard, j = self._locate(i)
        return int(shard.raw_idx[j + 1] - shard.raw_idx[j])

    def symbols_length(self, i: int) -> int:
        shard, j = self._locate(i)
        return int(shard.sym_idx[j + 1] - shard.sym_idx[j])

    def compressor(self):
        from proxylm import compress

        return compress.load(self.compressor_config, self.directory)

    def _locate(self, i: int) -> tuple[_OpenShard, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"document {i} out of range for {n} documents in split '{self.split}'")
        i = int(i) % n
        k = bisect.bisect_right(self._starts, i) - 1
        if k not in self._open:
            name = self.manifest["splits"][self.split]["shards"][k]["name"]
            self._open[k] = _OpenShard(self.directory / self.split / name, self._metas[k])
        return self._open[k], i - self._starts[k]


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a completely prepared directory; a ShardsError naming it otherwise."""
    if not directory.is_dir():
        raise ShardsError(f"shard directory not found: {directory}")
    manifest = read_json(directory / MANIFEST)
    if manifest is None:
        raise ShardsError(
            f"{directory}: no complete {MANIFEST}; `proxylm prepare` has not finished here (run it again to resume)"
        )
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ShardsError(
            f"{directory / MANIFEST}: format {manifest.get('format')!r} version {manifest.get('version')!r}, "
            f"expected {FORMAT!r} version {FORMAT_VERSION}; prepare it again"
        )
    if manifest.get("complete") is not True:
        raise ShardsError(f"{directory / MANIFEST}: marked incomplete; run `proxylm prepare` again to finish it")
    return manifest


def _checked_shard_meta(split_dir: Path, entry: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    meta = read_json(split_dir / entry["name"] / SHARD_META)
    if meta is None:
        raise ShardsError(f"{split_dir / entry['name']}: listed in the manifest but missing; run `proxylm prepare` again")
    if meta.get("fingerprint") != fingerprint or meta.get("content") != entry.get("content"):
        raise ShardsError(
            f"{split_dir / entry['name']}: does not match the manifest (rewritten by another prepare?); "
            "run `proxylm prepare` again"
        )
    return meta
