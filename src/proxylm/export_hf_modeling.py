"""A proxylm byte-level model for transformers (`trust_remote_code=True`); needs only torch and transformers.

`proxylm export` copies this file into the exported folder as `modeling_proxylm.py`; proxylm
itself never imports it. The architecture mirrors proxylm.model.Transformer and the weights
keep its tensor names, so the exported model computes the same logits.

    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True, local_files_only=True)
    ids = model.encode_prompt("def fib(n):")                       # (1, T): <bos> <raw> + bytes
    out = model.generate(ids, max_new_tokens=64, do_sample=False)
    print(model.decode_bytes(out[0, ids.shape[1]:]).decode("utf-8", "replace"))

Design choices:
- Ids: raw byte b is id 64 + b; <bos> = 1, <eos> = 2, <raw> = 12, </raw> = 13; compressed
  symbols (ids >= 320) exist only for training. A prompt is `<bos> <raw>` + its bytes, left
  open (`<bos>` + bytes for a byte model trained without sentinels, `raw_sentinels: false`);
  generation ends at `</raw>` or `<eos>` (both are eos_token_id).
- `generate()` adds a logits processor that keeps byte ids and the two end ids
  (`config.raw_bytes_only`), so a proxy model never writes a compressed symbol.
- Logits are head 0's (next id). The extra multi-byte heads are kept as modules, with their
  weights, for `head_logits`; generate() does not use them.
- KV cache: transformers' DynamicCache; the attention mask combines causality (offset by the
  cached length) with the 2-D padding mask, and a padded query attends to itself only.
"""

from __future__ import annotations

from dataclasses import field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import CausalLMOutputWithPast

BOS, EOS, RAW_OPEN, RAW_CLOSE = 1, 2, 12, 13
BYTE_OFFSET, BYTE_VOCAB_SIZE = 64, 320
# transformers 5 names the output's cache `cache`; 4.x named it `past_key_values`.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class ProxyLMConfig(PreTrainedConfig):
    model_type = "proxylm"

    vocab_size: int = BYTE_VOCAB_SIZE
    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = 64
    intermediate_size: int = 704
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    tie_embeddings: bool = False  # head 0 reads the input embedding matrix (proxylm's own tying)
    n_main_heads: int = 1
    n_raw_heads: int = 0
    raw_bytes_only: bool = True  # generate() writes byte ids, </raw> and <eos> only
    raw_sentinels: bool = True  # prompts open with <bos> <raw> (False: a byte model trained on <bos> bytes)
    bos_token_id: int | None = BOS
    eos_token_id: int | list[int] | None = field(default_factory=lambda: [RAW_CLOSE, EOS])
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = False  # no transformers-side tying: weights are stored as proxylm has them
    use_cache: bool = True


def rope_angles(pos: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) positions -> cos, sin of shape (B, T, 1, head_dim / 2), float32."""
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim)
    angles = pos.float()[..., None] * inv_freq  # (B, T, hd/2)
    return angles.cos()[:, :, None], angles.sin()[:, :, None]


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    cos, sin = (r.to(x.dtype) for r in rope)
    x1, x2 = x.chunk(2, dim=-1)  # (B, T, H, hd/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, config: ProxyLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        self.wq = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, x, rope, mask, cache=None) -> torch.Tensor:
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, self.head_dim), rope)  # (B, T, H, hd)
        k = apply_rope(self.wk(x).view(B, T, self.n_kv_heads, self.head_dim), rope)  # (B, T, KV, hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, KV, hd)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, hd)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, KV, S, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv_heads != self.n_heads)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, D)


class FeedForward(nn.Module):
    def __init__(self, config: ProxyLMConfig):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, config: ProxyLMConfig, layer_idx: int):
        super().__init__()
        self.attention_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attention = Attention(config, layer_idx)
        self.ffn_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(self, x, rope, mask, cache=None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rope, mask, cache)
        return x + self.feed_forward(self.ffn_norm(x))


class RawBytesOnly(LogitsProcessor):
    """Keep byte ids and the ids that end a raw view; everything else gets -inf."""

    def __init__(self, vocab_size: int):
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        allowed[BYTE_OFFSET:BYTE_VOCAB_SIZE] = True
        allowed[[RAW_CLOSE, EOS]] = True
        self.allowed = allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.masked_fill(~self.allowed.to(scores.device), float("-inf"))


class ProxyLMForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ProxyLMConfig
    config: ProxyLMConfig
    base_model_prefix = "proxylm"
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def __init__(self, config: ProxyLMConfig):
        super().__init__(config)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.output = None if config.tie_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        n_heads = config.n_main_heads + config.n_raw_heads
        self.extra_heads = nn.ModuleList(
            nn.Linear(config.hidden_size, config.vocab_size if h < config.n_main_heads else BYTE_VOCAB_SIZE, bias=False)
            for h in range(1, n_heads)
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, nn.RMSNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.tok_embeddings = value

    def head_logits(self, hidden: torch.Tensor, head: int = 0) -> torch.Tensor:
        """Final hidden states (B, T, D) -> logits of one head; head h predicts the id at t+1+h."""
        if head == 0:
            weight = self.tok_embeddings.weight if self.output is None else self.output.weight
            return F.linear(hidden, weight)
        return self.extra_heads[head - 1](hidden)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: DynamicCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: DynamicCache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache()
        h = self.tok_embeddings(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, D)
        B, T, _ = h.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=h.device).expand(B, T)
        rope = rope_angles(position_ids, self.config.head_dim, self.config.rope_theta)
        mask = attention_mask_4d(attention_mask, B, T, past, h.device)
        for layer in self.layers:
            h = layer(h, rope, mask, cache if use_cache else None)
        h = self.norm(h)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.head_logits(h, 0)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache if use_cache else None})

    def generate(self, *args, logits_processor: LogitsProcessorList | None = None, **kwargs):
        if self.config.raw_bytes_only:
            logits_processor = LogitsProcessorList([*(logits_processor or []), RawBytesOnly(self.config.vocab_size)])
        return super().generate(*args, logits_processor=logits_processor, **kwargs)

    def encode_prompt(self, text: str | bytes) -> torch.LongTensor:
        """A prompt as (1, T) ids: <bos> <raw> (or <bos> alone) + its UTF-8 bytes, left open."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        header = [BOS, RAW_OPEN] if self.config.raw_sentinels else [BOS]
        return torch.tensor([[*header, *(BYTE_OFFSET + b for b in data)]], dtype=torch.long)

    @staticmethod
    def decode_bytes(ids) -> bytes:
        """Byte ids -> bytes, stopping at the first id that ends a raw view; other ids are skipped."""
        out = bytearray()
        for i in (int(t) for t in ids):
            if i in (RAW_CLOSE, EOS):
                break
            if BYTE_OFFSET <= i < BYTE_VOCAB_SIZE:
                out.append(i - BYTE_OFFSET)
        return bytes(out)


def attention_mask_4d(padding: torch.Tensor | None, B: int, T: int, past: int, device) -> torch.Tensor:
    """(B, 1, T, past + T) bool: causal over the cached and new positions, padded keys hidden."""
    S = past + T
    query = torch.arange(past, S, device=device)[:, None]  # (T, 1)
    mask = (torch.arange(S, device=device)[None] <= query)[None, None]  # (1, 1, T, S)
    if padding is not None and padding.dim() == 2:
        mask = mask & padding[:, None, None, -S:].bool()  # (B, 1, T, S)
        mask = mask | (torch.arange(S, device=device)[None] == query)[None, None]  # a padded query sees itself
    return mask.expand(B, 1, T, S)
