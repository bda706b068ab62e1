"""The decoder: document isolation, causality, GQA, KV cache, loss, presets, save/load."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from proxylm.config import ConfigError
from proxylm.errors import UserError
from proxylm.model import (
    AttentionMask,
    BatchShapeError,
    ModelConfig,
    PRESET_NAMES,
    Transformer,
    attend,
    document_causal_mask,
    flex_block_mask,
    flops_per_token,
    model_preset,
)
from proxylm.model_io import load_model, load_model_config, save_model
from proxylm.vocab import BYTE_VOCAB_SIZE, IGNORE_INDEX


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(**{"vocab_size": 400, "dim": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 64, **overrides})


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_config(**overrides)).eval()


def random_ids(*shape, seed: int = 1, high: int = 400) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=1e-5, rtol=1e-4)


# Attention ---------------------------------------------------------------------------------------------


def test_documents_never_see_each_other_and_positions_restart():
    model = tiny_model()
    ids = random_ids(1, 20)
    doc = torch.tensor([[0] * 8 + [1] * 12])
    with torch.no_grad():
        base = model(ids, doc=doc).logits
        perturbed = ids.clone()
        perturbed[0, :8] = random_ids(8, seed=7)
        after_doc0_change = model(perturbed, doc=doc).logits
        perturbed = ids.clone()
        perturbed[0, 8:] = random_ids(12, seed=8)
        after_doc1_change = model(perturbed, doc=doc).logits
        doc1_alone = model(ids[:, 8:]).logits
    assert close(after_doc0_change[0, 8:], base[0, 8:])
    assert close(after_doc1_change[0, :8], base[0, :8])
    assert close(base[0, 8:], doc1_alone[0])  # positions restart: doc 1's first token is at position 0
    assert not close(after_doc0_change[0, :8], base[0, :8])  # the perturbation did change doc 0


def test_explicit_positions_match_the_default_derived_from_doc():
    model = tiny_model()
    ids = random_ids(2, 12)
    doc = torch.tensor([[0] * 5 + [1] * 7, [3] * 12])
    pos = torch.tensor([list(range(5)) + list(range(7)), list(range(12))])
    with torch.no_grad():
        assert close(model(ids, doc=doc).logits, model(ids, pos=pos, doc=doc).logits)


def test_attention_is_causal():
    model = tiny_model()
    ids = random_ids(1, 16)
    changed = ids.clone()
    changed[0, 10] = (ids[0, 10] + 1) % 400
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert close(a[0, :10], b[0, :10])
    assert not close(a[0, 10:], b[0, 10:])


def test_dense_mask_is_causal_within_documents():
    doc = torch.tensor([[0, 0, 1, 1, 1]])
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(document_causal_mask(doc)[0, 0], expected)


def test_grouped_query_attention_matches_multi_head_with_shared_kv():
    gqa = tiny_model(n_kv_heads=2)
    mha = tiny_model(seed=3)
    state = gqa.state_dict()
    head_dim = 8
    for name in [n for n in state if n.endswith(("wk.weight", "wv.weight"))]:
        per_head = state[name].view(2, head_dim, 32)  # (KV, hd, D)
        state[name] = per_head.repeat_interleave(2, dim=0).reshape(4 * head_dim, 32)  # query head i uses kv i // 2
    mha.load_state_dict(state)
    ids = random_ids(2, 10)
    with torch.no_grad():
        assert close(gqa(ids).logits, mha(ids).logits)
    assert gqa.num_params() < mha.num_params()


def test_flex_attention_matches_sdpa_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 16, 8, generator=gen)
    k, v = torch.randn(2, 2, 16, 8, generator=gen), torch.randn(2, 2, 16, 8, generator=gen)
    doc = torch.tensor([[0] * 6 + [1] * 10, [0] * 16])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # uncompiled flex warns that it is slow
        flex = attend(q, k, v, AttentionMask(block=flex_block_mask(doc, create_block_mask)), flex=flex_attention)
    dense = attend(q, k, v, AttentionMask(dense=document_causal_mask(doc)))
    assert close(flex, dense)


# KV cache ----------------------------------------------------------------------------------------------


def test_cached_single_steps_match_the_full_forward():
    model = tiny_model(n_raw_heads=1)
    ids = random_ids(2, 12)
    cache = model.init_cache(batch_size=2, max_len=16)
    with torch.no_grad():
        full = model(ids).logits
        steps = [model.forward_step(ids[:, t : t + 1], cache) for t in range(12)]
    assert close(torch.cat([s.logits for s in steps], dim=1), full)
    assert [tuple(h.shape) for h in steps[0].head_logits] == [(2, 1, 400), (2, 1, BYTE_VOCAB_SIZE)]
    assert cache.length == 12


def test_left_padded_rows_with_own_positions_and_kept_rows_match_each_row_alone():
    model = tiny_model()
    a, b = random_ids(1, 9, seed=2), random_ids(1, 5, seed=3)
    rows = torch.tensor([70, 5, 300, 2])
    cache = model.init_cache(2, 16)
    ids = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], dim=1)])  # b left-padded by 4
    doc = torch.tensor([[0] * 9, [-1] * 4 + [0] * 5])
    pos = torch.tensor([list(range(9)), [0] * 4 + list(range(5))])
    with torch.no_grad():
        step = model.forward_step(ids, cache, pos, doc, rows=rows)
        cache.keep_rows(torch.tensor([1]))  # row a leaves the batch
        nxt = model.forward_step(torch.tensor([[77]]), cache, torch.tensor([[5]]), torch.tensor([[0]]), rows=rows)
        alone_a = model(a).logits[0, -1]
        alone_b = model(torch.cat([b, torch.tensor([[77]])], dim=1)).logits[0, -2:]
    assert step.logits.shape == (2, 9, 4)
    assert close(step.logits[0, -1], alone_a[rows]) and close(step.logits[1, -1], alone_b[0, rows])
    assert cache.batch_size == 1 and close(nxt.logits[0, 0], alone_b[1, rows])


def test_multi_token_step_matches_single_steps():
    model = tiny_model(n_main_heads=2)
    ids = random_ids(1, 10)
    one, many = model.init_cache(1, 16), model.init_cache(1, 16)
    with torch.no_grad():
        singles = [model.forward_step(ids[:, t : t + 1], one) for t in range(10)]
        model.forward_step(ids[:, :4], many)
        block = model.forward_step(ids[:, 4:], many)  # verify six drafted tokens at once
    for head in range(2):
        expected = torch.cat([s.head_logits[head] for s in singles[4:]], dim=1)
        assert close(block.head_logits[head], expected)


def test_truncate_rolls_back_rejected_tokens():
    model = tiny_model()
    prefix, rejected, accepted = random_ids(1, 6), random_ids(1, 3, seed=2), random_ids(1, 3, seed=3)
    cache = model.init_cache(1, 16)
    with torch.no_grad():
        model.forward_step(prefix, cache)
        model.forward_step(rejected, cache)
        cache.truncate(6)
        step = model.forward_step(accepted, cache)
        full = model(torch.cat([prefix, accepted], dim=1)).logits
    assert close(step.logits, full[:, 6:])
    with pytest.raises(ValueError, match="cannot truncate"):
        cache.truncate(10)


def test_left_padded_rows_with_doc_ids_match_unpadded_runs():
    model = tiny_model()
    short, long = random_ids(1, 3), random_ids(1, 5, seed=4)
    pad = torch.zeros(1, 2, dtype=torch.long)
    ids = torch.cat([torch.cat([pad, short], dim=1), long])  # (2, 5)
    doc = torch.tensor([[-1, -1, 0, 0, 0], [0] * 5])
    pos = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    cache = model.init_cache(2, 8)
    with torch.no_grad():
        step = model.forward_step(ids, cache, pos=pos, doc=doc)
        following = random_ids(2, 1, seed=5)
        nxt = model.forward_step(following, cache, pos=pos[:, -1:] + 1, doc=torch.zeros(2, 1, dtype=torch.long))
        alone = model(torch.cat([short, following[:1]], dim=1)).logits
    assert close(step.logits[0, 2:], alone[0, :3])
    assert close(nxt.logits[0], alone[0, 3:])


def test_a_full_cache_is_a_clear_error():
    model = tiny_model()
    cache = model.init_cache(1, 4)
    with pytest.raises(BatchShapeError, match="KV cache full"):
        model.forward_step(random_ids(1, 5), cache)


# Loss --------------------------------------------------------------------------------------------------


def final_hidden(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    captured = {}
    handle = model.norm.register_forward_hook(lambda module, args, out: captured.setdefault("h", out))
    model(ids)
    handle.remove()
    return captured["h"]


def test_loss_is_the_weighted_cross_entropy_over_positions_with_a_target():
    model = tiny_model(n_raw_heads=1)
    ids = random_ids(1, 4)
    targets = torch.tensor([[[70, 400 - 1, 5, IGNORE_INDEX], [80, IGNORE_INDEX, 90, IGNORE_INDEX]]])  # (1, 2, 4)
    weights = torch.tensor([[[0.5, 1.0, 0.25, 0.0], [0.5, 0.0, 0.75, 0.0]]])
    with torch.no_grad():
        out = model(ids, targets=targets, weights=weights)
        h = final_hidden(model, ids)
        log_probs = [F.log_softmax(model.head_logits(h, head)[0], dim=-1) for head in range(2)]  # (T, V_head)
    expected, counted = 0.0, 0
    for t in range(4):
        terms = [
            -weights[0, head, t].item() * log_probs[head][t, targets[0, head, t]].item()
            for head in range(2)
            if targets[0, head, t] != IGNORE_INDEX
        ]
        expected += sum(terms)
        counted += bool(terms)
    assert counted == 3
    assert math.isclose(out.loss.item(), expected / counted, rel_tol=1e-5)
    head0 = [-log_probs[0][t, targets[0, 0, t]].item() for t in range(3)] + [0.0]
    assert torch.allclose(out.position_loss[0], torch.tensor(head0), atol=1e-5)
    assert log_probs[1].shape[-1] == BYTE_VOCAB_SIZE


def test_default_weights_are_uniform_over_valid_heads():
    model = tiny_model(n_main_heads=2)
    ids = random_ids(2, 6)
    targets = torch.stack([random_ids(2, 6, seed=9), random_ids(2, 6, seed=10)], dim=1)
    targets[:, 1, -1] = IGNORE_INDEX
    valid = (targets != IGNORE_INDEX).float()
    with torch.no_grad():
        default = model(ids, targets=targets).loss
        explicit = model(ids, targets=targets, weights=valid / valid.sum(1, keepdim=True)).loss
    assert math.isclose(default.item(), explicit.item(), rel_tol=1e-6)


def test_head0_targets_and_weights_may_be_two_dimensional():
    model = tiny_model(n_raw_heads=1)
    ids, targets = random_ids(2, 6), random_ids(2, 6, seed=11)
    weights = torch.rand(2, 6)
    with torch.no_grad():
        flat = model(ids, targets=targets, weights=weights)
        stacked = model(ids, targets=targets[:, None], weights=weights[:, None])
    assert torch.equal(flat.loss, stacked.loss) and flat.head_losses.shape == (1,)


def test_bad_target_and_weight_shapes_are_clear_errors():
    model = tiny_model(n_raw_heads=1)
    ids = random_ids(2, 6)
    with pytest.raises(BatchShapeError, match=r"heads<= 2.*n_raw_heads=1.*\(2, 3, 6\)"):
        model(ids, targets=torch.zeros(2, 3, 6, dtype=torch.long))
    with pytest.raises(BatchShapeError, match=r"time=6.*\(2, 2, 5\)"):
        model(ids, targets=torch.zeros(2, 2, 5, dtype=torch.long))
    with pytest.raises(BatchShapeError, match=r"weights have shape \(2, 1, 6\) but targets have \(2, 2, 6\)"):
        model(ids, targets=torch.zeros(2, 2, 6, dtype=torch.long), weights=torch.ones(2, 1, 6))
    with pytest.raises(UserError, match="doc has shape"):
        model(ids, doc=torch.zeros(2, 5, dtype=torch.long))


def test_bf16_autocast_trains_with_a_float32_loss():
    model = tiny_model()
    ids = random_ids(2, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, targets=random_ids(2, 8, seed=2))
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_tiny_model_overfits_one_sequence():
    torch.manual_seed(0)
    model = Transformer(tiny_config(dim=64))
    ids = random_ids(1, 33, high=320)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


# Config, presets, accounting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(dim=30, n_heads=4), "dim=30 is not divisible by n_heads=4"),
        (dict(n_kv_heads=3), "n_heads=4 is not divisible by n_kv_heads=3"),
        (dict(vocab_size=100), "vocab_size=100 is below the 320 byte ids"),
        (dict(head_dim=7), "head_dim=7 must be even"),
        (dict(n_raw_heads=-1), "n_raw_heads must be >= 0"),
    ],
)
def test_invalid_configs_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**fields)


@pytest.mark.parametrize("name, size", [("0.5b", 0.5e9), ("1.5b", 1.5e9), ("4b", 4e9), ("7b", 7e9), ("14b", 14e9)])
def test_paper_presets_build_on_meta_with_their_named_size(name, size):
    with torch.device("meta"):
        model = Transformer(model_preset(name, vocab_size=BYTE_VOCAB_SIZE))
    assert abs(model.num_params() - size) <= 0.2 * size


def test_cpu_presets_grow_small_tiny_base_and_tiny_is_a_few_million():
    counts = {}
    for name in ("small", "tiny", "base"):
        with torch.device("meta"):
            counts[name] = Transformer(model_preset(name, BYTE_VOCAB_SIZE)).num_params()
    assert counts["small"] < counts["tiny"] < counts["base"]
    assert 2e6 <= counts["tiny"] <= 10e6
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        model_preset("huge", BYTE_VOCAB_SIZE)
    assert set(PRESET_NAMES) >= {"tiny", "0.5b", "14b"}


def test_meta_build_then_init_weights_gives_a_working_model():
    with torch.device("meta"):
        model = Transformer(tiny_config())
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    out = model(random_ids(1, 5), targets=random_ids(1, 5, seed=2))
    assert torch.isfinite(out.loss) and abs(out.loss.item() - math.log(400)) < 0.5  # near-uniform at init


def test_flops_per_token_is_six_n_plus_a_linear_attention_term():
    cfg = tiny_config(n_raw_heads=1)
    model = Transformer(cfg)
    per_extra_token = flops_per_token(cfg, 65) - flops_per_token(cfg, 64)
    assert per_extra_token == 12 * cfg.n_layers * cfg.n_heads * cfg.attn_head_dim
    assert flops_per_token(cfg, 0) == 6 * model.num_params(include_embeddings=False)


def test_tied_embeddings_share_one_matrix():
    tied, untied = tiny_model(tie_embeddings=True), tiny_model()
    assert untied.num_params() - tied.num_params() == 400 * 32
    assert tied.output is None
    assert flops_per_token(tied.cfg, 8) == flops_per_token(untied.cfg, 8)


# Save / load -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [dict(n_raw_heads=1, n_kv_heads=2), dict(tie_embeddings=True)])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, overrides):
    model = tiny_model(**overrides)
    save_model(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    ids = random_ids(2, 7)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.cfg == model.cfg
    assert load_model_config(tmp_path / "ckpt" / "model.json") == model.cfg
    assert json.loads((tmp_path / "ckpt" / "model.json").read_text())["format"] == "proxylm-model"


def test_weights_shared_by_assignment_survive_a_round_trip(tmp_path):
    model = tiny_model()
    model.output.weight = model.tok_embeddings.weight  # tied by hand, two names for one tensor
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert torch.equal(loaded.output.weight, model.tok_embeddings.weight)
    assert torch.equal(loaded.tok_embeddings.weight, model.tok_embeddings.weight)


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="model checkpoint not found"):
        load_model(tmp_path / "nope")
    with pytest.raises(UserError, match="not a proxylm model checkpoint: it has no model.json"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "something-else", "version": 1, "config": {}}))
    with pytest.raises(UserError, match="not a proxylm model file"):
        load_model(tmp_path)

    save_model(tiny_model(), tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    meta["config"]["ffn_dim"] = 100
    (tmp_path / "ckpt" / "model.json").write_text(json.dumps(meta))
    shapes = r"tensor 'layers.0.feed_forward.w1.weight' has shape \(128, 32\) .* needs \(100, 32\)"
    with pytest.raises(UserError, match=shapes):
        load_model(tmp_path / "ckpt")
    meta["config"]["dimm"] = 3
    (tmp_path / "ckpt" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="unknown key 'config.dimm'"):
        load_model(tmp_path / "ckpt")

    save_model(tiny_model(), tmp_path / "other")
    (tmp_path / "other" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_model(tmp_path / "other")
