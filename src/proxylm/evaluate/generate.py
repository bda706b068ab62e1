"""Raw-byte generation with a KV cache, and self-speculative multi-byte decoding.

    gen = Generator.from_checkpoint("runs/x/final")
    for chunk in gen.stream("def fib(n):", max_bytes=200):
        print(chunk.decode("utf-8", "replace"), end="")
    gen.complete(["def add(a, b):"], max_bytes=128, stop=["\\ndef "])

Design choices:
- A prompt is laid out as in training, `<bos> <raw>` + its bytes, and left open (DESIGN.md
  section 6); a vanilla byte model, trained without sentinels, gets `<bos>` + bytes. The sampler is restricted to byte ids plus the two ids that end a raw view,
  `</raw>` and `<eos>`: a raw-byte model never writes a compressed symbol for a user.
- One decoding loop (`decode_ids`) serves greedy, sampled and speculative decoding: each turn
  picks the next id from head 0 and, when greedy, drafts further ids from heads 1..k-1 (head
  h predicts t+1+h; the raw heads of a proxy model serve raw positions). One `forward_step`
  verifies the drafts: a draft is kept while it equals head 0's greedy choice after the ids
  before it, and the cache is rolled back past the first miss (Stern et al. 2018, "Blockwise
  Parallel Decoding"; self-speculative as in Medusa, Cai et al. 2024). Every kept id is the
  greedy choice given the ids before it, so the output is that of one-byte greedy decoding,
  with 1..k bytes per forward. Sampling (temperature > 0) decodes one byte per forward.
- Long outputs: when the window is full, the context is rebuilt from the pinned header
  (`<bos> <raw>`) and the latest half of the window, and decoding goes on. A speculative
  block never runs past a full window, so rebuilds happen after the same ids whatever the
  block size, and speculative output stays identical to one-byte output past the window too.
- Stop strings are matched on bytes, and bytes that could still start a stop string are held
  back, so a stream never shows a partial stop string. Output excludes the stop string.
- Text: invalid bytes in the middle become U+FFFD; an incomplete UTF-8 sequence at the very
  end (cut by max_bytes) is dropped, not turned into a replacement character.
- Seeds: each prompt of `complete` draws from its own generator seeded by (seed, index), so a
  prompt's sample does not depend on the other prompts, and n copies of a prompt differ.
- Batch size 1 per prompt: simple and exact; on CPU a batch barely helps one sequence's latency.
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

RAW_HEADER = (vocab.BOS, vocab.RAW_OPEN)
RAW_STOP_IDS = (vocab.RAW_CLOSE, vocab.EOS)


class StopReason(enum.Enum):
    END_OF_VIEW = "end_of_view"  # the model wrote </raw> or <eos>
    STOP_STRING = "stop_string"
    MAX_BYTES = "max_bytes"


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    """0 is greedy (argmax); higher flattens the distribution."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most likely ids whose probabilities sum to at least top_p."""
    seed: int = 0
    """Seeds the sampler; the same seed and prompt give the same text."""

    def __post_init__(self) -> None:
        if not self.temperature >= 0.0:
            raise UserError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---- choosing ids ---------------------------------------------------------------------------------


def allowed_mask(vocab_size: int, ids: Iterable[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(V,) bool mask that is True at `ids`."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[list(ids)] = True
    return mask


def raw_output_ids() -> list[int]:
    """What a raw view may continue with: the 256 byte ids and the ids that end it."""
    return list(range(vocab.BYTE_OFFSET, vocab.SYMBOL_OFFSET)) + list(RAW_STOP_IDS)


def restrict(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Logits (..., V_head) with every id outside `allowed` set to -inf (V_head may be < V)."""
    allowed = allowed[: logits.shape[-1]]
    return logits.float().masked_fill(~allowed, float("-inf"))


def pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """One id from restricted logits (V,): argmax, or a seeded draw under temperature and top-p."""
    if sampling.greedy:
        return int(logits.argmax())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)  # (V,)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs >= sampling.top_p  # mass before it already enough
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


# ---- the decoding loop ----------------------------------------------------------------------------


@dataclass
class DecodeStats:
    forwards: int = 0  # forward_step calls after the prompt (each emits >= 1 id)
    emitted: int = 0
    rebuilds: int = 0  # context rebuilt because the cache was full


class Context:
    """The ids the model conditions on, mirrored in a KV cache (or recomputed when uncached)."""

    def __init__(self, model: torch.nn.Module, prefix: Sequence[int], pinned: int, use_cache: bool):
        self.model = model
        self.device = next(model.parameters()).device
        self.max_len = model.cfg.max_seq_len
        self.pinned = pinned
        self.use_cache = use_cache
        self.cache = model.init_cache(1) if use_cache else None
        self.ids: list[int] = []
        self.last = self.prefill(list(prefix))  # (H, V_h) per head at the last position

    def room(self) -> int:
        """Ids that still fit the window."""
        return self.max_len - len(self.ids)

    def prefill(self, ids: list[int]) -> list[torch.Tensor]:
        if len(ids) > self.max_len:
            ids = ids[: self.pinned] + ids[len(ids) - (self.max_len - self.pinned) :]
        self.ids = []
        if self.cache is not None:
            self.cache.reset()
        return [head[-1] for head in self.extend(ids)]

    def rebuild(self) -> None:
        """Keep the pinned header and the latest half of the window."""
        keep = max(1, (self.max_len - self.pinned) // 2)
        self.last = self.prefill(self.ids[: self.pinned] + self.ids[-keep:])

    def extend(self, ids: list[int]) -> list[torch.Tensor]:
        """Append ids; return each head's logits at the new positions, [(T, V_h)] per head."""
        new = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, T)
        if self.cache is not None:
            heads = self.model.forward_step(new, self.cache).head_logits  # [(1, T, V_h)]
        else:
            full = torch.tensor([self.ids + ids], dtype=torch.long, device=self.device)  # (1, L)
            heads = [self.model(full).logits[:, -len(ids) :]]  # head 0 only: (1, T, V)
        self.ids.extend(ids)
        return [h[0] for h in heads]

    def truncate(self, length: int) -> None:
        del self.ids[length:]
        if self.cache is not None:
            self.cache.truncate(length)


@torch.inference_mode()
def decode_ids(
    model: torch.nn.Module,
    prefix: Sequence[int],
    max_new: int,
    allowed: torch.Tensor,
    stop_ids: Iterable[int] = (),
    sampling: Sampling = Sampling(),
    draft_heads: int = 1,
    pinned: int = 0,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    stats: DecodeStats | None = None,
) -> Iterator[int]:
    """Yield up to `max_new` ids after `prefix`, ending after the first id in `stop_ids`.

    `draft_heads` > 1 turns on speculative decoding with that many heads (greedy only); the
    ids are those of one-id greedy decoding. `pinned` leading ids survive a context rebuild.
    """
    stats = stats if stats is not None else DecodeStats()
    if max_new <= 0:
        return
    stop = set(stop_ids)
    block_size = draft_heads if sampling.greedy and use_cache else 1
    ctx = Context(model, prefix, pinned, use_cache)
    while stats.emitted < max_new:
        if ctx.room() == 0:
            ctx.rebuild()
            stats.rebuilds += 1
        # Never past a full window: rebuilds then fall at the same ids whatever the block size.
        k = min(block_size, max_new - stats.emitted, ctx.room())
        block = [pick(restrict(ctx.last[0], allowed), sampling, generator)]
        block += [int(restrict(ctx.last[h], allowed).argmax()) for h in range(1, k)]
        start = len(ctx.ids)
        out = ctx.extend(block)  # [(k, V_h)] per head
        stats.forwards += 1
        kept = 1
        while kept < k and int(restrict(out[0][kept - 1], allowed).argmax()) == block[kept]:
            kept += 1
        ctx.truncate(start + kept)
        ctx.last = [head[kept - 1] for head in out]
        for token in block[:kept]:
            stats.emitted += 1
            yield token
            if token in stop:
                return


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

    def find(self, data: bytes, since: int) -> int | None:
        """Index of the earliest stop string ending at or after `since`, or None."""
        hits = [i for s in self.stops if (i := data.find(s, max(0, since - len(s) + 1))) >= 0]
        return min(hits) if hits else None

    def safe_length(self, data: bytes) -> int:
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


class Generator:
    """Raw-byte generation from a model: streaming, greedy/sampled, speculative when it can.

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
        from proxylm.evaluate.bpb import EvalCheckpoint, View

        ckpt = EvalCheckpoint.load(path, device=device or default_device())
        if ckpt.view.needs_compressor:
            raise UserError(
                f"{ckpt.path} is a token model (trained on compressed symbols only): it cannot write raw bytes"
            )
        return cls(ckpt.model, speculative=speculative, sentinels=ckpt.view is View.RAW)

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
        if max_bytes < 0:
            raise UserError(f"--max-bytes must be >= 0, got {max_bytes}")
        sampling = Sampling(temperature, top_p, seed)
        data = prompt_bytes(prompt)
        generator = torch.Generator().manual_seed(seed)
        stats = DecodeStats()
        matcher = StopMatcher(stop)
        out = bytearray()
        shown = 0
        reason = StopReason.MAX_BYTES
        ids = decode_ids(
            self.model,
            [*self.header, *vocab.bytes_to_ids(data).tolist()],
            max_bytes,
            self.allowed,
            RAW_STOP_IDS,
            sampling,
            draft_heads=self.draft_heads,
            pinned=len(self.header),
            generator=generator,
            stats=stats,
        )
        for token in ids:
            if token in RAW_STOP_IDS:
                reason = StopReason.END_OF_VIEW
                break
            out.append(token - vocab.BYTE_OFFSET)
            hit = matcher.find(bytes(out), len(out) - 1)
            if hit is not None:
                del out[hit:]
                reason = StopReason.STOP_STRING
                break
            safe = matcher.safe_length(bytes(out))
            if safe > shown:
                yield bytes(out[shown:safe])
                shown = safe
        ids.close()
        if len(out) > shown:
            yield bytes(out[shown:])
        if result is not None:
            result.append(Generation(data, bytes(out), reason, stats))

    def generate(self, prompt: str | bytes, max_bytes: int = 256, **kwargs) -> Generation:
        result: list[Generation] = []
        for _ in self.stream(prompt, max_bytes, result=result, **kwargs):
            pass
        return result[0]

    def complete(
        self,
        prompts: list[str],
        max_bytes: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = (),
    ) -> list[str]:
        """The text each prompt continues with (the prompt and any stop string excluded)."""
        texts = []
        for index, prompt in enumerate(prompts):
            prompt_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            gen = self.generate(prompt, max_bytes, temperature=temperature, top_p=top_p, seed=prompt_seed, stop=stop)
            texts.append(gen.text)
        return texts
