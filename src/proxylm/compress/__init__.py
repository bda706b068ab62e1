"""Compressors (the proxies) behind one interface and a registry keyed by spec strings.

    >>> from proxylm import compress
    >>> c = compress.build("gzip")
    >>> c.decode(c.encode(b"hello")) == b"hello"
    True

A spec is a name with optional parameters: `bpe:vocab=8192`, `bpe-bytes:vocab=8192,order=gray`,
`neural:model=PATH,window_bits=16`. Modules are imported on first use, so building `gzip` never
imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from proxylm.compress.base import Compressor, CompressorError, check_symbols

# name -> "module:Class"; one module per compressor.
REGISTRY: dict[str, str] = {
    "raw": "proxylm.compress.raw:RawCompressor",
    "gzip": "proxylm.compress.gzip:GzipCompressor",
    "bpe": "proxylm.compress.bpe:BPECompressor",
    "bpe-bytes": "proxylm.compress.bpe_bytes:BPEBytesCompressor",
    "doublebyte": "proxylm.compress.bits:DoubleByteCompressor",
    "halfbyte": "proxylm.compress.bits:HalfByteCompressor",
    "doublebit": "proxylm.compress.bits:DoubleBitCompressor",
    "bit": "proxylm.compress.bits:BitCompressor",
    "neural": "proxylm.compress.neural:NeuralCompressor",
}

__all__ = [
    "Compressor",
    "CompressorError",
    "build",
    "load",
    "parse_spec",
    "split_specs",
    "compressor_class",
    "check_symbols",
]


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'bpe:vocab=8192,order=gray' -> ('bpe', {'vocab': 8192, 'order': 'gray'})."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CompressorError(f"compressor spec {spec!r}: parameter {item!r} is not key=value")
        params[key.strip()] = _scalar(value.strip())
    return name, params


def split_specs(text: str) -> list[str]:
    """'bpe:vocab=512,min_frequency=2,gzip' -> ['bpe:vocab=512,min_frequency=2', 'gzip'].

    Specs use commas between their own parameters, so a piece that is `key=value` without a
    name (no ':') continues the spec before it.
    """
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if specs and "=" in piece and ":" not in piece:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def _scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def compressor_class(name: str) -> type[Compressor]:
    if name not in REGISTRY:
        raise CompressorError(f"unknown compressor {name!r}; choose one of: {', '.join(sorted(REGISTRY))}")
    module_name, _, cls_name = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def build(spec: str, **extra: Any) -> Compressor:
    """A compressor from its spec string; keyword arguments add to (and override) the spec's params."""
    name, params = parse_spec(spec)
    params.update(extra)
    cls = compressor_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise CompressorError(f"compressor spec {spec!r}: {exc}") from None


def load(config: dict[str, Any], directory: str | Path) -> Compressor:
    """Rebuild a compressor from the config saved in a manifest and the files beside it."""
    if "name" not in config:
        raise CompressorError("saved compressor config has no 'name'")
    return compressor_class(config["name"]).load(config, Path(directory))
