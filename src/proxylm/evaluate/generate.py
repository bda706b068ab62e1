"""Raw-byte generation: prompts in, text out, one stream or many rows in one batch.

    gen = Generator.from_checkpoint("runs/x/final")
    for chunk in gen.stream("def fib(n):", max_bytes=200):
        print(chunk.decode("utf-8", "replace"), end="")
    gen.complete(["def add(a, b):"] * 10, max_bytes=128, temperature=0.8, stop=["\\ndef "])

Design choices:
- A prompt is laid out as in training, `<bos> <raw>` + its bytes, and left open (DESIGN.md
  section 6); a vanilla byte model, trained without sentinels, gets `<bos>` + bytes. The sampler
  is restricted to byte ids plus the two ids that end a raw view, `</raw>` and `<eos>`: a
  raw-byte model never writes a compressed symbol for a user.
- Decoding itself is proxylm.evaluate.decoder's: many prompts go through `decode_rows` as one
  batch (`complete`, `generate_batch`); one greedy stream of a model with extra heads goes
  through the self-speculative `decode_ids` (same output, fewer forwards); other single
  streams are a batch of one.
- Stop strings are matched on bytes per row, and bytes that could still start a stop string are
  held back, so a stream never shows a partial stop string. Output excludes the stop string.
- Text: invalid bytes in the middle become U+FFFD; an incomplete UTF-8 sequence at the very
  end (cut by max_bytes) is dropped, not turned into a replacement character.
- Seeds: each prompt of `complete` draws from its own generator seeded by (seed, index), so a
  prompt's sample does not depend on the other prompts, and n copies of a prompt differ.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from proxylm import vocab
from proxylm.errors import UserError
from proxylm.evaluate.decoder import (  # noqa: F401  (re-exported: the id-level API)
    DecodeStats,
    Row,
    Sampling,
    allowed_mask,
    decode_ids,
    decode_rows,
    pick,
    restrict,
)

RAW_HEADER = (vocab.BOS, vocab.RAW_OPEN)
RAW_STOP_IDS = (vocab.RAW_CLOSE, vocab.EOS)


class StopReason(enum.Enum):
    END_OF_VIEW = "end_of_view"  # the model wrote </raw> or <eos>
    STOP_STRING = "stop_string"
    MAX_BYTES = "max_bytes"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def raw_output_ids() -> list[int]:
    """What a raw view may continue with: the 256 byte ids and the ids that end it."""
    return list(range(vocab.BYTE_OFFSET, vocab.SYMBOL_OFFSET)) + list(RAW_STOP_IDS)


# ---- bytes and text -------------------------------------------------------------------------------


def prompt_bytes(prompt: str | bytes) -> bytes:
    """A prompt as bytes; a str that cannot be UTF-8 (lone surrogates) is a UserError."""
    if isinstance(prompt, bytes):
        return prompt
    try:
        return prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(
            f"prompt is not valid UTF-8 (character {exc.start}: {prompt[exc.start]!r}); "
            "pass the prompt as bytes (or --prompt-file) to feed arbitrary bytes"
        ) from None


def drop_incomplete_tail(data: bytes) -> bytes:
    """Drop a UTF-8 sequence cut short at the end of `data` (only a trailing, incomplete one)."""
    for back in range(1, min(4, len(data)) + 1):
        lead = data[-back]
        if lead & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 1
        return data[:-back] if need > back else data
    return data


def to_text(data: bytes) -> str:
    return drop_incomplete_tail(data).decode("utf-8", errors="replace")


class StopMatcher:
    """Finds stop strings in a growing byte buffer and says how much is safe to show."""

    def __init__(self, stops: Iterable[str | bytes]):
        self.stops = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in stops]
        self.stops = [s for s in self.stops if s]

        self.last_bytes = {s[-1] for s in self.stops}  # a stop string can only end on one of these

    def find(self, data: bytes | bytearray, since: int) -> int | None:
        """Index of the earliest stop string ending at or after `since`, or None."""
        hits = [i for s in self.stops if (i := data.find(s, max(0, since - len(s) + 1))) >= 0]
        return min(hits) if hits else None

    def safe_length(self, data: bytes | bytearray) -> int:
        """Bytes of `data` that cannot become part of a stop string as more bytes arrive."""
        held = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(data)), 0, -1):
                if data.endswith(s[:n]):
                    held = max(held, n)
                    break
        return len(data) - held


@dataclass
class Generation:
    prompt: bytes
    output: bytes
    stop_reason: StopReason
    stats: DecodeStats = field(default_factory=DecodeStats)

    @property
    def text(self) -> str:
        return to_text(self.output)


class ByteRow(Row):
    """A row whose ids become bytes: ends at `</raw>` / `<eos>` or before a stop string."""

    def __init__(self, prompt: bytes, prefix: list[int], max_bytes: int, stops: StopMatcher, generator=None):
        super().__init__(prefix, max_bytes, self.take_id, generator)
        self.prompt, self.stops = prompt, stops
        self.out = bytearray()
        self.shown = 0
        self.reason = StopReason.MAX_BYTES

    def take_id(self, token: int) -> bool:
        if token in RAW_STOP_IDS:
            self.reason = StopReason.END_OF_VIEW
            return True
        self.out.append(token - vocab.BYTE_OFFSET)
        if self.out[-1] in self.stops.last_bytes:
            hit = self.stops.find(self.out, len(self.out) - 1)
            if hit is not None:
                del self.out[hit:]
                self.reason = StopReason.STOP_STRING
                return True
        return False

    def chunk(self) -> bytes:
        """Output not shown yet that can no longer turn into a stop string (all of it once done)."""
        safe = len(self.out) if self.done else self.stops.safe_length(self.out)
        if safe <= self.shown:
            return b""
        data, self.shown = bytes(self.out[self.shown : safe]), safe
        return data

    def generation(self) -> Generation:
        return Generation(self.prompt, bytes(self.out), self.reason, self.stats)


class Generator:
    """Raw-byte generation from a model: streaming or batched, greedy/sampled, speculative when it can.

    `sentinels=False` is for a vanilla byte model (trained on `<bos> bytes <eos>`): prompts
    then open with `<bos>` alone."""

    def __init__(self, model: torch.nn.Module, speculative: bool = True, sentinels: bool = True):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.header = RAW_HEADER if sentinels else (vocab.BOS,)
        cfg = model.cfg
        self.draft_heads = cfg.n_main_heads + cfg.n_raw_heads if speculative else 1
        self.allowed = allowed_mask(cfg.vocab_size, raw_output_ids(), self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None, speculative: bool = True):
        """A generator for a checkpoint, prompting it the way it was trained (see EvalCheckpoint)."""
        from proxylm.evaluate.bpb import EvalCheckpoint

        return cls.for_loaded(EvalCheckpoint.load(path, device=device or default_device()), speculative)

    @classmethod
    def for_loaded(cls, ckpt, speculative: bool = True):
        """A generator for an already loaded EvalCheckpoint."""
        from proxylm.evaluate.bpb import View

        if ckpt.view.needs_compressor:
            raise UserError(
                f"{ckpt.path} is a token model (trained on compressed symbols only): it cannot write raw bytes"
            )
        return cls(ckpt.model, speculative=speculative, sentinels=ckpt.view is View.RAW)

    def row(self, prompt: str | bytes, max_bytes: int, stop: Iterable[str | bytes], seed: int) -> ByteRow:
        if max_bytes < 0:
            raise UserError(f"--max-bytes must be >= 0, got {max_bytes}")
        data = prompt_bytes(prompt)
        prefix = [*self.header, *vocab.bytes_to_ids(data).tolist()]
        return ByteRow(data, prefix, max_bytes, StopMatcher(stop), torch.Generator().manual_seed(seed))

    def stream(
        self,
        prompt: str | bytes,
        max_bytes: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Iterable[str | bytes] = (),
        result: list[Generation] | None = None,
    ) -> Iterator[bytes]:
        """Yield the output in chunks as it is decoded; append the Generation to `result` if given."""
        sampling = Sampling(temperature, top_p, seed)
        row = self.row(prompt, max_bytes, stop, seed)
        if sampling.greedy and self.draft_heads > 1:
            steps = self._speculative(row)
        else:
            steps = decode_rows(self.model, [row], raw_output_ids(), sampling, pinned=len(self.header))
        for _ in steps:
            chunk = row.chunk()
            if chunk:
                yield chunk
        row.done = True
        chunk = row.chunk()
        if chunk:
            yield chunk
        if result is not None:
            result.append(row.generation())

    def _speculative(self, row: ByteRow) -> Iterator[None]:
        ids = decode_ids(
            self.model, row.prefix, row.max_new, self.allowed, RAW_STOP_IDS, Sampling(),
            draft_heads=self.draft_heads, pinned=len(self.header), stats=row.stats,
        )
        for token in ids:
            if row.accept(token):
                break
            yield
        ids.close()

    def generate(self, prompt: str | bytes, max_bytes: int = 256, **kwargs) -> Generation:
        result: list[Generation] = []
        for _ in self.stream(prompt, max_bytes, result=result, **kwargs):
            pass
        return result[0]

    def generate_batch(
        self,
        prompts: Sequence[str | bytes],
        max_bytes: int | Sequence[int],
        temperature: float = 0.0,
        top_p: float = 1.0,
        seeds: Sequence[int] | None = None,
        stop: Iterable[str | bytes] = (),
        row_stops: Sequence[Iterable[str | bytes]] | None = None,
    ) -> list[Generation]:
        """All prompts decoded as one batch. Row i samples with seeds[i] (default i), writes at most
        max_bytes[i] bytes (or max_bytes for all) and stops at `stop` or its own row_stops[i]."""
        sampling = Sampling(temperature, top_p)
        n = len(prompts)
        limits = [max_bytes] * n if isinstance(max_bytes, int) else list(max_bytes)
        seeds = list(seeds) if seeds is not None else list(range(n))
        stops = [[*stop, *extra] for extra in row_stops] if row_stops is not None else [list(stop)] * n
        if not len(limits) == len(seeds) == len(stops) == n:
            raise ValueError(f"{n} prompts but {len(limits)} max_bytes, {len(seeds)} seeds, {len(stops)} row_stops")
        rows = [self.row(*args) for args in zip(prompts, limits, stops, seeds)]
        for _ in decode_rows(self.model, rows, raw_output_ids(), sampling, pinned=len(self.header)):
            pass
        return [r.generation() for r in rows]

    def complete(
        self,
        prompts: list[str],
        max_bytes: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
    ) -> list[str]:
        """The text each prompt continues with (the prompt and any stop string excluded), as one batch."""
        seeds = sample_seeds(seed, len(prompts))
        gens = self.generate_batch(prompts, max_bytes, temperature=temperature, top_p=top_p, seeds=seeds, stop=stop)
        return [g.text for g in gens]


def sample_seeds(seed: int, n: int) -> list[int]:
    """The seed of each of n rows drawn under one user seed: row i gets (seed, i) hashed."""
    return [int(np.random.SeedSequence([seed, index]).generate_state(1)[0]) for index in range(n)]
