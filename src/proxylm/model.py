"""The decoder: one Llama-style transformer reads every view (raw bytes, compressed symbols, sentinels).

Design choices:
- Llama block: pre-norm RMSNorm, rotary position embeddings, SwiGLU MLP, no biases, optional GQA
  (`n_kv_heads < n_heads`). `head_dim` can differ from dim / n_heads.
- Packed documents never see each other. SDPA gets a dense (B, 1, T, T) boolean mask
  `causal & (doc_q == doc_k)`: B*T*T bytes (8 x 4096^2 = 128 MiB), and every score is still computed,
  masked or not. On a 2-core AVX-512 CPU the masked SDPA op (forward+backward, 8 x 512) takes ~1.3x the
  time of is_causal in fp32 and the same under bf16 autocast. `AttentionKind.FLEX` uses compiled flex_attention
  with a BlockMask on CUDA, which skips whole blocks across documents; flex cannot train on CPU, so
  there FLEX falls back to SDPA and one config serves both.
- Positions restart at each document: `pos` defaults to the offset inside the current run of `doc`.
  RoPE angles are computed from `pos` in float32 on the fly (no table, so no length limit and nothing
  to rebuild after building on the meta device).
- Embedding: `vocab_size` rows, so compressed symbols get their own rows ("separate embedding").
  The output head is untied by default (`tie_embeddings=False`): input rows of compressed symbols are
  trained by compressed inputs and output rows by compressed targets; the reference trains untied.
- Heads: all read the same final hidden state through their own linear map (as the reference does).
  Heads 0..k-1 are main heads over the full vocab (head h predicts t+1+h); heads k..k+r-1 are raw-byte
  heads (head k+j predicts t+k+1+j) whose outputs cover only ids below BYTE_VOCAB_SIZE.
- Loss: per head F.cross_entropy in float32 (also under bf16 autocast), weighted by the batch's
  per-position head weights, summed, divided by the number of positions with a valid target.
  One head's logits are live at a time, except head 0's, which are returned.
- Generation: a preallocated KV cache (`init_cache`), `forward_step` appends T >= 1 tokens and returns
  every head's logits (raw heads can serve as drafts), `cache.truncate(n)` rolls back rejected drafts.
  Batched decoding passes per-row positions and document ids (-1 on left padding), asks for head 0 at the
  allowed output ids only (`rows`), and drops finished rows with `cache.keep_rows`.
- `Transformer(cfg)` is safe on the meta device; `init_weights()` is separate (build on meta,
  `to_empty`, `init_weights`). Built on a real device it initialises itself.
- Presets: the reference implementation's shapes for 0.5b..14b, plus small CPU sizes (`model_preset`).

References: Llama (Touvron et al. 2023), RoPE (Su et al. 2021), SwiGLU (Shazeer 2020),
nanoGPT / nanochat model files, torchtitan llama3; FLOPs per token after PaLM (Chowdhery et al. 2022,
appendix B).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from proxylm.config import ConfigError
from proxylm.errors import UserError
from proxylm.vocab import BYTE_VOCAB_SIZE, IGNORE_INDEX


class AttentionKind(enum.Enum):
    SDPA = "sdpa"  # F.scaled_dot_product_attention with a dense boolean mask; trains everywhere
    FLEX = "flex"  # compiled flex_attention with a BlockMask on CUDA; SDPA on other devices


@dataclass
class ModelConfig:
    vocab_size: int = BYTE_VOCAB_SIZE
    """Embedding rows and main-head outputs: proxylm.vocab.vocab_size(alphabet); set by the trainer."""
    dim: int = 256
    """Width of the residual stream."""
    n_layers: int = 6
    """Number of transformer blocks."""
    n_heads: int = 4
    """Query heads per attention layer."""
    n_kv_heads: int | None = None
    """Key/value heads (GQA); must divide n_heads. None: same as n_heads (plain multi-head)."""
    head_dim: int | None = None
    """Width of one attention head; must be even (RoPE). None: dim // n_heads."""
    ffn_dim: int | None = None
    """Hidden width of the SwiGLU MLP. None: Llama rule, 8/3 * dim rounded up to multiple_of."""
    multiple_of: int = 64
    """Rounding of the derived ffn_dim (hardware-friendly matrix shapes)."""
    max_seq_len: int = 1024
    """Longest sequence trained on; the default KV-cache length. RoPE itself has no limit."""
    rope_theta: float = 10000.0
    """RoPE base; larger values suit longer contexts."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Std of the normal init; residual output projections use init_std / sqrt(2 * n_layers)."""
    tie_embeddings: bool = False
    """Share the embedding matrix with head 0's output matrix."""
    n_main_heads: int = 1
    """Main heads over the full vocab; head h predicts the symbol at t+1+h."""
    n_raw_heads: int = 0
    """Extra raw-byte heads (ids < BYTE_VOCAB_SIZE) after the main heads; the reference proxies use 1."""
    attention: AttentionKind = AttentionKind.SDPA
    """Attention kernel (see AttentionKind)."""

    def __post_init__(self) -> None:
        positive = ("vocab_size", "dim", "n_layers", "n_heads", "multiple_of", "max_seq_len", "n_main_heads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"model config: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_kv_heads", "head_dim", "ffn_dim"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"model config: {name} must be >= 1 or null, got {getattr(self, name)}")
        if self.vocab_size < BYTE_VOCAB_SIZE:
            raise ConfigError(f"model config: vocab_size={self.vocab_size} is below the {BYTE_VOCAB_SIZE} byte ids")
        if self.head_dim is None and self.dim % self.n_heads:
            raise ConfigError(f"model config: dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.num_kv_heads:
            raise ConfigError(f"model config: n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")
        if self.attn_head_dim % 2:
            raise ConfigError(f"model config: head_dim={self.attn_head_dim} must be even for RoPE")
        if self.n_raw_heads < 0:
            raise ConfigError(f"model config: n_raw_heads must be >= 0, got {self.n_raw_heads}")
        if self.rope_theta <= 0 or self.norm_eps <= 0 or self.init_std <= 0:
            raise ConfigError("model config: rope_theta, norm_eps and init_std must be > 0")

    @property
    def num_kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        if self.ffn_dim is not None:
            return self.ffn_dim
        return self.multiple_of * math.ceil(8 * self.dim / 3 / self.multiple_of)

    @property
    def n_output_heads(self) -> int:
        return self.n_main_heads + self.n_raw_heads

    def head_vocab_size(self, head: int) -> int:
        return self.vocab_size if head < self.n_main_heads else BYTE_VOCAB_SIZE


# Presets --------------------------------------------------------------------------------------------

# The 0.5b..14b shapes are those of the paper's reference configs (apps/evabyte/configs/evabyte_*.yaml):
# multi-head attention, head_dim 128, RoPE base 1e5, context 32k. Their names count non-embedding
# parameters. They are plain-attention Llama blocks here (the reference uses EVA attention).
_PRESETS: dict[str, dict] = {
    "small": dict(dim=128, n_layers=4, n_heads=2, max_seq_len=1024),
    "tiny": dict(dim=256, n_layers=6, n_heads=4, max_seq_len=1024),
    "base": dict(dim=384, n_layers=8, n_heads=6, max_seq_len=1024),
    "0.5b": dict(dim=1024, n_layers=28, n_heads=8, ffn_dim=4096, max_seq_len=32768, rope_theta=1e5),
    "1.5b": dict(dim=2048, n_layers=20, n_heads=16, ffn_dim=8192, max_seq_len=32768, rope_theta=1e5),
    "4b": dict(dim=3072, n_layers=32, n_heads=24, ffn_dim=9216, max_seq_len=32768, rope_theta=1e5),
    "7b": dict(dim=4096, n_layers=32, n_heads=32, ffn_dim=12288, max_seq_len=32768, rope_theta=1e5),
    "14b": dict(dim=5120, n_layers=40, n_heads=40, ffn_dim=16384, max_seq_len=32768, rope_theta=1e5),
}
PRESET_NAMES = tuple(_PRESETS)


def model_preset(name: str, vocab_size: int, **overrides) -> ModelConfig:
    """A named shape: 'small' < 'tiny' (the CPU default) < 'base' for CPU scale trends, and the paper's
    '0.5b', '1.5b', '4b', '7b', '14b'. Keyword overrides replace fields (e.g. n_raw_heads=1)."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown model preset {name!r} (known: {', '.join(PRESET_NAMES)})")
    return ModelConfig(vocab_size=vocab_size, **{**_PRESETS[name], **overrides})


# Outputs and the KV cache ---------------------------------------------------------------------------


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, V) main head 0
    loss: torch.Tensor | None = None  # () weighted CE over all heads given targets
    position_loss: torch.Tensor | None = None  # (B, T) head-0 CE in nats, 0 where its target is ignored
    head_losses: torch.Tensor | None = None  # (H,) detached mean CE of each head over its valid targets


@dataclass
class StepOutput:
    logits: torch.Tensor  # (B, T, V) main head 0 at the new positions
    head_logits: list[torch.Tensor]  # every head: (B, T, V) main heads, (B, T, BYTE_VOCAB_SIZE) raw heads


class KVCache:
    """Preallocated keys and values of every layer, plus each cached position's document id."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device=None, dtype=None):
        shape = (cfg.n_layers, batch_size, cfg.num_kv_heads, max_len, cfg.attn_head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, KV, S, hd)
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, KV, S, hd)
        self.doc = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)  # (B, S)
        self.length = 0
        self.uses_docs = False  # set once a step passes doc ids; until then no document mask is needed

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def store(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, KV, T, hd) at [start, start+T) and return everything cached up to there."""
        end = start + k.shape[2]
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def keep_rows(self, index: torch.Tensor) -> None:
        """Keep (or repeat) the rows at `index` (B',): rows that finished decoding leave the batch."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
        self.doc = self.doc.index_select(0, index)

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on (e.g. rejected draft tokens)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a KV cache of length {self.length} to {length}")
        self.length = length

    def reset(self) -> None:
        self.length = 0
        self.uses_docs = False


# Attention masks ------------------------------------------------------------------------------------


@dataclass
class AttentionMask:
    """How queries see keys: plain causal (Tq == Tk), a dense boolean mask, or a flex BlockMask."""

    dense: torch.Tensor | None = None  # (B or 1, 1, Tq, Tk) bool, True = may attend
    block: object | None = None  # torch.nn.attention.flex_attention.BlockMask
    causal: bool = False


def document_causal_mask(doc: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids -> (B, 1, T, T) bool: causal and within one document."""
    T = doc.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc.device).tril()  # (T, T)
    same_doc = doc[:, :, None] == doc[:, None, :]  # (B, T, T)
    return (causal & same_doc)[:, None]  # (B, 1, T, T)


def positions_from_doc(doc: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids -> (B, T) offsets inside each run of equal ids (positions restart per document)."""
    B, T = doc.shape
    index = torch.arange(T, device=doc.device).expand(B, T)  # (B, T)
    new_doc = torch.ones_like(doc, dtype=torch.bool)
    new_doc[:, 1:] = doc[:, 1:] != doc[:, :-1]
    starts = torch.where(new_doc, index, 0).cummax(dim=1).values  # (B, T) start of the current run
    return index - starts


_compiled_flex = None


def _flex_functions():
    """flex_attention and create_block_mask, compiled once (uncompiled flex materialises all scores)."""
    global _compiled_flex
    if _compiled_flex is None:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        _compiled_flex = (torch.compile(flex_attention), torch.compile(create_block_mask))
    return _compiled_flex


def flex_block_mask(doc: torch.Tensor, create_block_mask=None):
    """(B, T) document ids -> flex BlockMask for causal attention within documents."""
    if create_block_mask is None:
        create_block_mask = _flex_functions()[1]

    def same_doc_causal(b, h, q, k):
        return (q >= k) & (doc[b, q] == doc[b, k])

    B, T = doc.shape
    return create_block_mask(same_doc_causal, B, None, T, T, device=doc.device)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, flex=None) -> torch.Tensor:
    """q (B, H, Tq, hd), k and v (B, KV, Tk, hd) -> (B, H, Tq, hd); KV divides H (GQA)."""
    if mask.block is not None:
        flex = flex or _flex_functions()[0]
        return flex(q, k, v, block_mask=mask.block, enable_gqa=k.shape[1] != q.shape[1])
    k, v = k.to(q.dtype), v.to(q.dtype)  # a cache kept in another dtype than autocast's
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask.dense, is_causal=mask.causal, enable_gqa=k.shape[1] != q.shape[1]
    )


# Blocks ---------------------------------------------------------------------------------------------


def rope_angles(pos: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) positions -> cos, sin of shape (B, T, 1, head_dim / 2), float32."""
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim)
    angles = pos.float()[..., None] * inv_freq  # (B, T, hd/2)
    return angles.cos()[:, :, None], angles.sin()[:, :, None]


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate the two halves of each head of x (B, T, H, hd) by the angles in rope."""
    cos, sin = (r.to(x.dtype) for r in rope)
    x1, x2 = x.chunk(2, dim=-1)  # (B, T, H, hd/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


@dataclass
class CacheSlot:
    """Where one layer reads and writes the KV cache during a step."""

    cache: KVCache
    layer: int
    start: int


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.num_kv_heads, cfg.attn_head_dim
        self.wq = nn.Linear(cfg.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, cfg.dim, bias=False)

    def forward(self, x, rope, mask: AttentionMask, slot: CacheSlot | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, self.head_dim), rope)  # (B, T, H, hd)
        k = apply_rope(self.wk(x).view(B, T, self.n_kv_heads, self.head_dim), rope)  # (B, T, KV, hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, KV, hd)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, hd)
        if slot is not None:
            k, v = slot.cache.store(slot.layer, slot.start, k, v)  # (B, KV, start+T, hd)
        y = attend(q, k, v, mask)  # (B, H, T, hd)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))

    def init_weights(self, std: float, out_std: float) -> None:
        for linear in (self.wq, self.wk, self.wv):
            nn.init.normal_(linear.weight, std=std)
        nn.init.normal_(self.wo.weight, std=out_std)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.ffn_hidden_dim
        self.w1 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w3 = nn.Linear(cfg.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.w1.weight, std=std)
        nn.init.normal_(self.w3.weight, std=std)
        nn.init.normal_(self.w2.weight, std=out_std)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, rope, mask: AttentionMask, slot: CacheSlot | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rope, mask, slot)
        return x + self.feed_forward(self.ffn_norm(x))

    def init_weights(self, std: float, out_std: float) -> None:
        self.attention_norm.reset_parameters()
        self.ffn_norm.reset_parameters()
        self.attention.init_weights(std, out_std)
        self.feed_forward.init_weights(std, out_std)


class BatchShapeError(UserError, ValueError):
    """Inputs, targets or weights whose shapes do not fit each other or the model."""


# The model ------------------------------------------------------------------------------------------


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        # Head 0 is `output` (absent when tied); the others live in `extra_heads`.
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.extra_heads = nn.ModuleList(
            nn.Linear(cfg.dim, cfg.head_vocab_size(h), bias=False) for h in range(1, cfg.n_output_heads)
        )
        if not self.tok_embeddings.weight.is_meta:
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        std, out_std = self.cfg.init_std, self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers)
        nn.init.normal_(self.tok_embeddings.weight, std=std)
        for layer in self.layers:
            layer.init_weights(std, out_std)
        self.norm.reset_parameters()
        for head in [self.output, *self.extra_heads]:
            if head is not None:
                nn.init.normal_(head.weight, std=std)

    def head_logits(self, h: torch.Tensor, head: int) -> torch.Tensor:
        """Final hidden states (B, T, D) -> logits of one head (B, T, V_head)."""
        if head == 0:
            weight = self.tok_embeddings.weight if self.output is None else self.output.weight
            return F.linear(h, weight)
        return self.extra_heads[head - 1](h)

    def forward(self, ids, pos=None, doc=None, targets=None, weights=None) -> ModelOutput:
        """ids (B, T); pos (B, T) positions (default: offsets inside each run of `doc`, else arange);
        doc (B, T) document ids (default: one document); targets (B, H, T) for the first H <= n_heads heads
        (or (B, T) for head 0), IGNORE_INDEX where masked; weights (B, H, T) (default: uniform over the
        valid heads of each position)."""
        targets, weights = self._check_shapes(ids, pos, doc, targets, weights)
        pos = pos if pos is not None else positions_from_doc(doc if doc is not None else torch.zeros_like(ids))
        h = self.tok_embeddings(ids)  # (B, T, D)
        rope = rope_angles(pos, self.cfg.attn_head_dim, self.cfg.rope_theta)
        mask = self._training_mask(doc)
        for layer in self.layers:
            h = layer(h, rope, mask)
        h = self.norm(h)  # (B, T, D)
        if targets is None:
            return ModelOutput(logits=self.head_logits(h, 0))
        return self._loss(h, targets, weights)

    def _training_mask(self, doc: torch.Tensor | None) -> AttentionMask:
        if doc is None:
            return AttentionMask(causal=True)
        if self.cfg.attention is AttentionKind.FLEX and doc.device.type == "cuda":
            return AttentionMask(block=flex_block_mask(doc))
        return AttentionMask(dense=document_causal_mask(doc))

    def _loss(self, h: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> ModelOutput:
        B, H, T = targets.shape
        valid = targets != IGNORE_INDEX  # (B, H, T)
        if weights is None:
            weights = valid / valid.sum(dim=1, keepdim=True).clamp(min=1)  # (B, H, T)
        n_positions = valid.any(dim=1).sum().clamp(min=1)
        total = h.new_zeros((), dtype=torch.float32)
        head_losses = []
        for head in range(H):
            logits = self.head_logits(h, head)  # (B, T, V_head)
            ce = F.cross_entropy(
                logits.flatten(0, 1).float(), targets[:, head].flatten(), ignore_index=IGNORE_INDEX, reduction="none"
            ).view(B, T)  # (B, T) nats, 0 where ignored
            total = total + (ce * weights[:, head]).sum()
            head_losses.append(ce.detach().sum() / valid[:, head].sum().clamp(min=1))
            if head == 0:
                logits0, position_loss = logits, ce
        return ModelOutput(
            logits=logits0, loss=total / n_positions, position_loss=position_loss, head_losses=torch.stack(head_losses)
        )

    def _check_shapes(self, ids, pos, doc, targets, weights):
        """Validate shapes; return targets and weights as (B, H, T) (or None)."""
        if ids.dim() != 2:
            raise BatchShapeError(f"ids must be (batch, time), got shape {tuple(ids.shape)}")
        for name, t in (("pos", pos), ("doc", doc)):
            if t is not None and t.shape != ids.shape:
                raise BatchShapeError(f"{name} has shape {tuple(t.shape)} but ids have {tuple(ids.shape)}")
        if targets is None:
            if weights is not None:
                raise BatchShapeError("weights were given without targets")
            return None, None
        if targets.dim() == 2:
            targets = targets[:, None]  # (B, 1, T): head 0 only
            weights = weights[:, None] if weights is not None and weights.dim() == 2 else weights
        B, T = ids.shape
        n_heads = self.cfg.n_output_heads
        if targets.dim() != 3 or targets.shape[0] != B or targets.shape[2] != T or not 1 <= targets.shape[1] <= n_heads:
            heads = f"n_main_heads={self.cfg.n_main_heads} + n_raw_heads={self.cfg.n_raw_heads}"
            raise BatchShapeError(
                f"targets must be (batch={B}, heads<= {n_heads}, time={T}) for this model ({heads}), "
                f"got {tuple(targets.shape)}"
            )
        if weights is not None and weights.shape != targets.shape:
            raise BatchShapeError(f"weights have shape {tuple(weights.shape)} but targets have {tuple(targets.shape)}")
        return targets, weights

    # Generation -------------------------------------------------------------------------------------

    def init_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        """An empty KV cache for `batch_size` rows of up to `max_len` (default cfg.max_seq_len) positions,
        on the model's device and in its parameter dtype unless given."""
        weight = self.tok_embeddings.weight
        max_len = max_len or self.cfg.max_seq_len
        return KVCache(self.cfg, batch_size, max_len, device or weight.device, dtype or weight.dtype)

    def forward_step(self, ids: torch.Tensor, cache: KVCache, pos=None, doc=None, rows=None) -> StepOutput:
        """Append ids (B, T) to the cache and return every head's logits at those T positions.
        pos defaults to the cache positions; doc (B, T) ids keep rows' documents (or left padding) apart.
        rows (R,) ids: compute head 0 only, at these output ids (logits (B, T, R)), e.g. the bytes a decoder may write."""
        B, T = ids.shape
        start = cache.length
        if B != cache.batch_size:
            raise BatchShapeError(f"ids have batch {B} but the cache was made for {cache.batch_size}")
        if start + T > cache.max_len:
            raise BatchShapeError(f"KV cache full: {start} cached + {T} new > max_len {cache.max_len}")
        if pos is None:
            pos = torch.arange(start, start + T, device=ids.device).expand(B, T)
        mask = self._step_mask(cache, start, T, doc)
        h = self.tok_embeddings(ids)  # (B, T, D)
        rope = rope_angles(pos, self.cfg.attn_head_dim, self.cfg.rope_theta)
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, mask, CacheSlot(cache, i, start))
        cache.length = start + T
        h = self.norm(h)  # (B, T, D)
        if rows is not None:
            logits = F.linear(h, self._head_rows(rows))  # (B, T, R)
            return StepOutput(logits=logits, head_logits=[logits])
        logits = [self.head_logits(h, head) for head in range(self.cfg.n_output_heads)]
        return StepOutput(logits=logits[0], head_logits=logits)

    def _head_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Head 0's weight rows at `rows` (R, D), gathered once per rows tensor (and again if the weight changes)."""
        weight = self.tok_embeddings.weight if self.output is None else self.output.weight
        cached = self.__dict__.get("_head_rows_cache")
        if cached is None or cached[0] is not rows or cached[1] != weight._version:
            self.__dict__["_head_rows_cache"] = cached = (rows, weight._version, weight.index_select(0, rows))
        return cached[2]

    @staticmethod
    def _step_mask(cache: KVCache, start: int, T: int, doc: torch.Tensor | None) -> AttentionMask:
        if doc is not None:
            cache.doc[:, start : start + T] = doc
            cache.uses_docs = True
        if T == 1 and not cache.uses_docs:
            return AttentionMask()  # one query may see every cached key
        device = cache.k.device
        q_index = torch.arange(start, start + T, device=device)[:, None]  # (T, 1)
        causal = torch.arange(start + T, device=device)[None] <= q_index  # (T, start+T)
        if not cache.uses_docs:
            return AttentionMask(dense=causal[None, None])  # (1, 1, T, start+T)
        docs = cache.doc[:, : start + T]  # (B, start+T)
        same_doc = docs[:, None, :] == docs[:, start : start + T, None]  # (B, T, start+T)
        return AttentionMask(dense=(causal & same_doc)[:, None])  # (B, 1, T, start+T)

    # Accounting -------------------------------------------------------------------------------------

    def num_params(self, include_embeddings: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total if include_embeddings else total - self.tok_embeddings.weight.numel()


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, PaLM-style: 6 * N + 12 * L * H * hd * seq_len.

    N counts every weight used in a matrix multiply: all parameters except the embedding table (a lookup),
    plus head 0's matrix when it is tied to the embedding; every head is counted at every position.
    The attention term is QK^T and AV, forward and backward, without halving for causality, since
    dense masked attention computes every score anyway. Norm, RoPE and softmax FLOPs are left out."""
    with torch.device("meta"):
        model = Transformer(cfg)
    matmul_params = model.num_params(include_embeddings=False)
    if cfg.tie_embeddings:
        matmul_params += cfg.vocab_size * cfg.dim
    attention = 12 * cfg.n_layers * cfg.n_heads * cfg.attn_head_dim * seq_len
    return float(6 * matmul_params + attention)

