"""Export a checkpoint as a transformers model that loads offline with `trust_remote_code`.

    export_hf("runs/x/final", "exports/x")
    AutoModelForCausalLM.from_pretrained("exports/x", trust_remote_code=True, local_files_only=True)

Design choices:
- The folder holds `config.json` (with `auto_map` to the bundled code), `modeling_proxylm.py`
  (a verbatim copy of proxylm/export_hf_modeling.py: torch + transformers only),
  `model.safetensors` with proxylm's own tensor names (the bundled model mirrors
  proxylm.model.Transformer, so no renaming and no conversion) and `generation_config.json`.
- A vanilla byte model (trained without sentinels) is exported with `raw_sentinels: false`, so
  its prompts open with `<bos>` alone; token models are refused (they cannot write bytes).
- The config uses transformers' standard names (hidden_size, num_hidden_layers, ...) so tools
  that read them (lm-eval-harness, vLLM's config probing) find what they expect.
- Every file is written atomically and config.json last: a folder with a config.json is whole.
- proxylm does not need transformers to train or evaluate; only exporting imports it (lazily).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxylm import vocab
from proxylm.errors import UserError
from proxylm.io import atomic_path, atomic_write_json, atomic_write_text

TEMPLATE = Path(__file__).with_name("export_hf_modeling.py")
MODELING_FILE = "modeling_proxylm.py"
EOS_IDS = [vocab.RAW_CLOSE, vocab.EOS]


def hf_config(cfg: Any, sentinels: bool = True) -> dict[str, Any]:
    """config.json for a proxylm ModelConfig (`sentinels`: prompts open with `<bos> <raw>`, else `<bos>`)."""
    return {
        "model_type": "proxylm",
        "architectures": ["ProxyLMForCausalLM"],
        "auto_map": {
            "AutoConfig": f"{MODELING_FILE[:-3]}.ProxyLMConfig",
            "AutoModelForCausalLM": f"{MODELING_FILE[:-3]}.ProxyLMForCausalLM",
        },
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.attn_head_dim,
        "intermediate_size": cfg.ffn_hidden_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.norm_eps,
        "initializer_range": cfg.init_std,
        "tie_embeddings": cfg.tie_embeddings,
        "n_main_heads": cfg.n_main_heads,
        "n_raw_heads": cfg.n_raw_heads,
        "raw_bytes_only": True,
        "raw_sentinels": sentinels,
        "bos_token_id": vocab.BOS,
        "eos_token_id": EOS_IDS,
        "pad_token_id": vocab.PAD,
        "tie_word_embeddings": False,
        "use_cache": True,
        "dtype": "float32",
    }


def generation_config() -> dict[str, Any]:
    return {"bos_token_id": vocab.BOS, "eos_token_id": EOS_IDS, "pad_token_id": vocab.PAD, "do_sample": False}


def export_hf(ckpt: str | Path, out: str | Path) -> Path:
    """Write the transformers folder for the model in `ckpt` into `out`; return `out`."""
    from safetensors.torch import save_file

    from proxylm.evaluate.bpb import EvalCheckpoint, View

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    ckpt = EvalCheckpoint.load(ckpt)
    if ckpt.view.needs_compressor:
        raise UserError(f"{ckpt.path} is a token model (compressed symbols only); the export reads and writes raw bytes")
    model = ckpt.model
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic_write_text(out / MODELING_FILE, TEMPLATE.read_text())
    atomic_write_json(out / "generation_config.json", generation_config())
    atomic_write_json(out / "config.json", hf_config(model.cfg, sentinels=ckpt.view is View.RAW))
    return out
