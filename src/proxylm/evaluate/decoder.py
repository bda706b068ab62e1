"""Decoding ids from a model: the sampler, one sequence with self-speculative drafts, and many sequences in one batch.

    rows = [Row(prefix, max_new=256, accept=on_id, generator=torch.Generator().manual_seed(s)) for ...]
    for _ in decode_rows(model, rows, allowed_ids, Sampling(temperature=0.8), pinned=2):
        ...   # each row's `accept` has seen one more id

Design choices:
- `decode_ids` (one sequence): each turn picks the next id from head 0 and, when greedy, drafts
  further ids from heads 1..k-1 (head h predicts t+1+h; the raw heads of a proxy model serve raw
  positions). One `forward_step` verifies the drafts: a draft is kept while it equals head 0's
  greedy choice after the ids before it, and the cache is rolled back past the first miss (Stern
  et al. 2018, "Blockwise Parallel Decoding"; self-speculative as in Medusa, Cai et al. 2024).
  Every kept id is the greedy choice given the ids before it, so the output is that of one-id
  greedy decoding, with 1..k ids per forward. Sampling decodes one id per forward.
- `decode_rows` (a batch): prompts of different lengths are left-padded to the longest; padding
  has document id -1 and text document 0, so the model's document mask keeps padding out of
  every row, and each row's positions start at 0 at its own first id: RoPE and attention see
  what the row would see decoded alone. Every step appends one id per running row at one shared
  cache slot. Rows end on their own (`accept` returns True, or max_new ids); finished rows leave
  the batch at once (`KVCache.keep_rows` copies about what one step's attention reads), so they
  cost nothing afterwards.
- Identical prompts (n samples of one problem) are prefilled once and their cache rows copied.
- Only head 0's rows of the allowed ids are multiplied (`forward_step(rows=...)`): a raw-byte
  decoder of a proxy model needs 258 of its 320 + V outputs. Allowed ids are sorted, so argmax
  breaks ties as over the full vocabulary.
- Seeds: every row samples from its own torch.Generator, so a row's text does not depend on the
  other rows of its batch (up to float rounding of batched matrix products).
- Long outputs: when a row's context fills the model's window, it is rebuilt from the pinned
  header and the latest half of the window (as `decode_ids` does, at the same ids) and the row
  goes on in a later batch with the other rows that needed it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from proxylm.errors import UserError


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


# ---- choosing ids ---------------------------------------------------------------------------------


def allowed_mask(vocab_size: int, ids: Iterable[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(V,) bool mask that is True at `ids`."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[list(ids)] = True
    return mask


def restrict(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Logits (..., V_head) with every id outside `allowed` set to -inf (V_head may be < V)."""
    allowed = allowed[: logits.shape[-1]]
    return logits.float().masked_fill(~allowed, float("-inf"))


def pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """One id from restricted logits (V,): argmax, or a seeded draw under temperature and top-p."""
    return int(choose(logits[None], sampling, [generator])[0])


def choose(logits: torch.Tensor, sampling: Sampling, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """Column indices (B,) from logits (B, V): argmax, or a draw per row from that row's generator."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)  # (B, V)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= sampling.top_p  # mass before it already enough
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    probs = probs.cpu()
    return torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generators)])


# ---- one sequence, self-speculative ----------------------------------------------------------------------------


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


# ---- many sequences, one batch --------------------------------------------------------------------

PAD_DOC = -1  # document id of left padding: no row attends to it


@dataclass
class Row:
    """One sequence of a batch: what it continues, how far, and who takes its ids."""

    prefix: list[int]
    max_new: int
    accept: Callable[[int], bool] = lambda token: False
    """Takes each new id in order; returns True when the row is finished (a stop id or string)."""
    generator: torch.Generator | None = None
    stats: DecodeStats = field(default_factory=DecodeStats)
    context: list[int] = field(init=False)  # the ids the model conditions on (after any rebuild)
    done: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.context = list(self.prefix)
        self.done = self.max_new <= 0

    def take(self, token: int) -> None:
        self.context.append(token)
        self.stats.emitted += 1
        self.done = self.accept(token) or self.stats.emitted >= self.max_new


def fit_window(row: Row, max_len: int, pinned: int) -> None:
    """A context that fills the window keeps its pinned header and the latest half of the window."""
    if len(row.context) >= max_len:
        keep = max(1, (max_len - pinned) // 2)
        row.context = row.context[:pinned] + row.context[-keep:]
        row.stats.rebuilds += 1


@torch.inference_mode()
def decode_rows(
    model: torch.nn.Module, rows: Sequence[Row], allowed_ids: Iterable[int], sampling: Sampling = Sampling(), pinned: int = 0
) -> Iterator[None]:
    """Decode every row until it is done; yields after each batched step (rows' `accept` saw its ids)."""
    allowed = torch.tensor(sorted(set(allowed_ids)), dtype=torch.long, device=next(model.parameters()).device)
    pending = [r for r in rows if not r.done]
    while pending:
        for row in pending:
            fit_window(row, model.cfg.max_seq_len, pinned)
        yield from BatchRun(model, pending, allowed, sampling).steps()
        pending = [r for r in pending if not r.done]  # the rest filled the window: rebuilt next turn


class BatchRun:
    """Rows decoded together in one KV cache, from one left-padded prefill until each row is done or full."""

    def __init__(self, model: torch.nn.Module, rows: list[Row], allowed: torch.Tensor, sampling: Sampling):
        self.model, self.rows, self.allowed, self.sampling = model, rows, allowed, sampling
        self.device = allowed.device
        self.max_len = model.cfg.max_seq_len

    def steps(self) -> Iterator[None]:
        rows = self.rows
        logits, positions = self.prefill()  # (B, A), (B,)
        while rows:
            picks = choose(logits, self.sampling, [r.generator for r in rows])
            tokens = self.allowed[picks.to(self.device)]  # (B,)
            for row, token in zip(rows, tokens.tolist()):
                row.take(token)
            yield
            running = [i for i, r in enumerate(rows) if not r.done and len(r.context) < self.max_len]
            if len(running) < len(rows):
                index = torch.tensor(running, dtype=torch.long, device=self.device)
                self.cache.keep_rows(index)
                rows, tokens, positions = [rows[i] for i in running], tokens[index], positions[index]
                if not rows:
                    return
            logits = self.step(tokens, positions)
            positions = positions + 1
            for row in rows:
                row.stats.forwards += 1

    def prefill(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed every distinct context once, left-padded; copy cache rows to repeated contexts."""
        contexts = [r.context for r in self.rows]
        distinct = list(dict.fromkeys(map(tuple, contexts)))
        width = max(map(len, distinct))
        room = max(min(r.max_new - r.stats.emitted, self.max_len - len(r.context)) for r in self.rows)
        U = len(distinct)
        ids = torch.zeros(U, width, dtype=torch.long)
        doc = torch.full((U, width), PAD_DOC, dtype=torch.long)
        pos = torch.zeros(U, width, dtype=torch.long)
        for u, context in enumerate(distinct):
            ids[u, width - len(context) :] = torch.tensor(context)
            doc[u, width - len(context) :] = 0
            pos[u, width - len(context) :] = torch.arange(len(context))
        self.cache = self.model.init_cache(U, width + room)
        ids, pos, doc = (t.to(self.device) for t in (ids, pos, doc))
        out = self.model.forward_step(ids, self.cache, pos, doc, rows=self.allowed)  # logits (U, width, A)
        which = {c: u for u, c in enumerate(distinct)}
        index = torch.tensor([which[tuple(c)] for c in contexts], dtype=torch.long, device=self.device)
        if U < len(contexts):
            self.cache.keep_rows(index)
        positions = torch.tensor([len(c) for c in contexts], dtype=torch.long, device=self.device)
        return out.logits[:, -1].index_select(0, index), positions

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed one id per row (B,) at its position (B,); head 0's logits at the allowed ids (B, A)."""
        doc = torch.zeros_like(tokens)[:, None]
        out = self.model.forward_step(tokens[:, None], self.cache, positions[:, None], doc, rows=self.allowed)
        return out.logits[:, -1]
