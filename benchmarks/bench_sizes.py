"""Model sizes of the presets: parameters and training FLOPs per token (the README's size table).

    .venv/bin/python benchmarks/bench_sizes.py

Built on the meta device, so even 14B costs nothing. Parameters with the byte vocabulary (320 ids);
FLOPs per token from proxylm.model.flops_per_token (6N + attention) at each preset's usual
sequence length: 1024 for small and base, 512 for tiny (the CPU configs), 16384 for the paper's.
"""

from __future__ import annotations

import torch

from proxylm.model import PRESET_NAMES, Transformer, flops_per_token, model_preset
from proxylm.vocab import BYTE_VOCAB_SIZE

SEQ_LEN = {"small": 1024, "tiny": 512, "base": 1024}
PAPER_SEQ_LEN = 16384


def main() -> None:
    print(f"{'preset':<8}{'parameters':>16}{'seq':>8}{'FLOPs/token':>14}")
    for name in PRESET_NAMES:
        cfg = model_preset(name, BYTE_VOCAB_SIZE)
        with torch.device("meta"):
            params = Transformer(cfg).num_params()
        seq = SEQ_LEN.get(name, PAPER_SEQ_LEN)
        print(f"{name:<8}{params:>16,}{seq:>8}{flops_per_token(cfg, seq):>14.3g}")


if __name__ == "__main__":
    main()
