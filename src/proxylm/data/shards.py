"""Prepared shards on disk: per document its raw bytes, compressed symbols and side information.

    DIR/manifest.json                      written last, atomically: its presence means complete
    DIR/<compressor files>                 whatever the compressor's `save` wrote (a BPE model, ...)
    DIR/train/shard-00000/raw.bin          uint8, documents' bytes back to back
    DIR/train/shard-00000/raw.idx.npy      int64 offsets, n + 1 of them
    DIR/train/shard-00000/sym.bin          symbols in the smallest unsigned dtype for the alphabet
    DIR/train/shard-00000/sym.idx.npy
    DIR/train/shard-00000/side.bin, side.idx.npy    only when the compressor returns side info
    DIR/train/shard-00000/ids.bin          document ids, UTF-8, back to back, in order
    DIR/train/shard-00000/ids.idx.npy      (shards written before ids.bin: ids.json, a JSON list)
    DIR/train/shard-00000/meta.json        counts, dtypes, the run fingerprint and a content hash
    DIR/val/...

Design choices:
- Flat binary files + numpy offset arrays, all memory-mapped (the offsets with np.load's
  mmap_mode): `raw(i)` and `symbols(i)` are zero-copy views, opening a shard costs a few small
  reads, and reading one document touches a few pages whatever the shard's size, so private
  memory does not grow with the number of documents (nanoGPT's .bin files).
- Document ids are stored the same way (UTF-8 + offsets) and mapped only when `doc_id` is first
  called for a shard; shards written with ids.json still load, that list read on first use.
- A shard is written into a hidden temporary directory and renamed into place when complete; a
  directory rename is atomic, so a shard either exists whole or not at all.
- Each shard records the fingerprint of the run that wrote it (compressor, options) and a hash
  of its documents (ids and bytes): a re-run reuses a shard only when both match.
- `Shards.open` trusts only what a complete manifest lists and checks every listed shard's
  fingerprint and content hash, so a killed or half-rewritten directory never loads.
- Shards are opened lazily and the least recently used is closed when too many are open:
  every memory map holds a file descriptor (up to 8 a shard), and random access over thousands
  of shards would otherwise run into the open-files limit. The cap lets maps use half of that
  limit (64 shards under the common 1024); reopening a shard costs about 0.3 ms. A view already
  handed out keeps its map alive.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import resource
import shutil
from collections import OrderedDict
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
IDS = "ids"  # ids.bin + ids.idx.npy
LEGACY_IDS = "ids.json"
MAPS_PER_SHARD = 8  # raw, sym, side, ids: values and offsets


class ShardsError(UserError, ValueError):
    """A shard directory that is missing, incomplete or inconsistent; the message names it."""


def shard_name(index: int, task: int | None = None) -> str:
    """`shard-00012`; a shard written by task 3 of a multi-task prepare: `shard-00003-00012`."""
    return f"shard-{index:05d}" if task is None else f"shard-{task:05d}-{index:05d}"


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
        self.documents = 0
        self.offsets = {"raw": [0], "sym": [0], "side": [0], IDS: [0]}
        self.files = {kind: open(self.tmp / f"{kind}.bin", "wb") for kind in ("raw", "sym", IDS)}

    def add(self, doc_id: str, raw: bytes, symbols: np.ndarray, side: np.ndarray | None) -> None:
        self.add_many([doc_id], [raw], [(symbols, side)])

    def add_many(self, doc_ids: list[str], raws: list[bytes], encoded: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
        """`add` for many documents (symbols, side) in order, with one write per file: short
        documents would otherwise cost more in writes than in encoding."""
        if not doc_ids:
            return
        first_side = encoded[0][1]
        if not self.documents and first_side is not None:  # the first document decides: side info or none
            self.side_dtype = np.asarray(first_side).dtype
            self.files["side"] = open(self.tmp / "side.bin", "wb")
        for doc_id, (_, side) in zip(doc_ids, encoded):
            if (side is None) != (self.side_dtype is None):
                raise ShardsError(f"document '{doc_id}': the compressor returned side information for some documents only")
        self._extend("raw", b"".join(raws), [len(r) for r in raws])
        symbols = [np.ascontiguousarray(s, dtype=self.symbol_dtype) for s, _ in encoded]
        self._extend("sym", np.concatenate(symbols).data, [s.size for s, _ in encoded])
        if self.side_dtype is not None:
            sides = [np.ascontiguousarray(side, dtype=self.side_dtype) for _, side in encoded]
            self._extend("side", np.concatenate(sides).data, [side.size for side in sides])
        keys = [doc_id.encode("utf-8") for doc_id in doc_ids]
        self._extend(IDS, b"".join(keys), [len(k) for k in keys])
        self.documents += len(doc_ids)

    def _extend(self, kind: str, data, lengths: list[int]) -> None:
        self.files[kind].write(data)
        self.offsets[kind].extend((self.offsets[kind][-1] + np.cumsum(lengths)).tolist())

    def finish(self) -> dict[str, Any]:
        """Write index and meta, fsync, and rename into place (replacing a stale shard)."""
        for kind, fh in self.files.items():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            np.save(self.tmp / f"{kind}.idx.npy", np.asarray(self.offsets[kind], dtype=np.int64))
        meta = {
            **self.meta,
            "documents": self.documents,
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


def remove_temporaries(split_dir: Path, task: int | None = None) -> None:
    """Delete half-written shards left by a killed run (only task `task`'s: other tasks may be writing)."""
    if split_dir.is_dir():
        pattern = f"{TEMP_PREFIX}*" if task is None else f"{TEMP_PREFIX}{shard_name(0, task)[:-5]}*"
        for path in split_dir.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def finished_shard(split_dir: Path, name: str, fingerprint: str) -> dict[str, Any] | None:
    """The meta of a finished shard written by a run with this fingerprint, else None.

    It is reusable only if its `content` hash also equals that of the documents meant for it.
    """
    meta = read_json(split_dir / name / SHARD_META)
    return meta if meta and meta.get("fingerprint") == fingerprint else None


# ---- reading -----------------------------------------------------------------------------------


class _OpenShard:
    """One shard's memory maps: data and offsets; document ids on first use."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.documents = int(meta["documents"])
        self.raw_idx, self.raw = _mapped_column(path, "raw", np.dtype(np.uint8), self.documents)
        self.sym_idx, self.sym = _mapped_column(path, "sym", np.dtype(meta["symbol_dtype"]), self.documents)
        self.side_idx = self.side = None
        if meta.get("side_dtype"):
            self.side_idx, self.side = _mapped_column(path, "side", np.dtype(meta["side_dtype"]), self.documents)
        self._ids: tuple[np.ndarray, np.ndarray] | list[str] | None = None

    def doc_id(self, j: int) -> str:
        if self._ids is None:
            self._ids = self._open_ids()
        if isinstance(self._ids, list):
            return self._ids[j]
        offsets, data = self._ids
        return data[offsets[j] : offsets[j + 1]].tobytes().decode("utf-8")

    def _open_ids(self) -> tuple[np.ndarray, np.ndarray] | list[str]:
        if (self.path / f"{IDS}.idx.npy").exists():
            return _mapped_column(self.path, IDS, np.dtype(np.uint8), self.documents)
        try:
            ids = json.loads((self.path / LEGACY_IDS).read_text())
        except (OSError, ValueError) as exc:
            raise ShardsError(f"{self.path}: cannot read the document ids ({IDS}.bin or {LEGACY_IDS}): {exc}") from None
        if not isinstance(ids, list) or len(ids) != self.documents:
            raise ShardsError(f"{self.path / LEGACY_IDS}: expected a list of {self.documents} document ids")
        return ids


def _mapped_column(path: Path, kind: str, dtype: np.dtype, documents: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of one kind of data in a shard, both memory-mapped and checked against each other."""
    index_path = path / f"{kind}.idx.npy"
    try:
        # str paths: np.memmap resolves a Path component by component, most of the cost of an open.
        # A plain ndarray view of the map: indexing it skips np.memmap's Python-level hooks.
        offsets = np.load(str(index_path), mmap_mode="r").view(np.ndarray)  # (documents + 1,) int64
    except (OSError, ValueError) as exc:
        raise ShardsError(f"{index_path}: cannot read the offsets: {exc}") from None
    if offsets.shape != (documents + 1,):
        raise ShardsError(f"{index_path}: {offsets.shape[0]} offsets, the shard's meta says {documents} documents")
    return offsets, _memmap(path / f"{kind}.bin", dtype, int(offsets[-1]))


def _memmap(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    size = path.stat().st_size
    if size != count * np.dtype(dtype).itemsize:
        raise ShardsError(f"{path}: {size} bytes on disk, the index expects {count * np.dtype(dtype).itemsize}")
    if count == 0:  # np.memmap cannot map an empty file
        return np.empty(0, dtype=dtype)
    return np.memmap(str(path), dtype=dtype, mode="r", shape=(count,))


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
        self._open: OrderedDict[int, _OpenShard] = OrderedDict()  # least recently used first
        self.max_open_shards = open_shard_limit()  # more open shards close the least recently used

    @classmethod
    def open(cls, directory: str | Path, split: str = "train") -> "Shards":
        directory = Path(directory)
        manifest = read_manifest(directory)
        if split not in manifest["splits"]:
            raise ShardsError(f"{directory}: no split '{split}' (splits: {', '.join(manifest['splits'])})")
        return cls(directory, split, manifest)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into data-loader workers: send paths and indices, not memory maps (which would copy the data).
        return {k: v for k, v in self.__dict__.items() if k != "_open"} | {"_open": OrderedDict()}

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
        return shard.doc_id(j)

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
        shard = self._open.get(k)
        if shard is None:
            shard = self._open[k] = self._open_shard(k)
            if len(self._open) > self.max_open_shards:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(k)
        return shard, i - self._starts[k]

    def _open_shard(self, k: int) -> _OpenShard:
        name = self.manifest["splits"][self.split]["shards"][k]["name"]
        return _OpenShard(self.directory / self.split / name, self._metas[k])


def open_shard_limit() -> int:
    """How many shards may stay open so that their maps take at most half of the open-files limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 16
    return max(16, soft // (2 * MAPS_PER_SHARD))


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
    return {k: meta.get(k) for k in ("documents", "symbol_dtype", "side_dtype")}  # all a reader needs
