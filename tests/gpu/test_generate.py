"""Generation on the device: KV-cache greedy decoding equals a full-forward greedy reference, and
several prompts at once give what each prompt gives alone."""

from __future__ import annotations

import time

import pytest
import torch

from proxylm import vocab
from proxylm.evaluate.generate import (
    RAW_HEADER,
    RAW_STOP_IDS,
    Generator,
    allowed_mask,
    raw_output_ids,
    restrict,
    to_text,
)

from .conftest import small_model

pytestmark = pytest.mark.gpu
PROMPTS = ["def fibonacci(n):\n", "import os\n", "class Stack:\n    def push(self, x):", "# ✓ ünïcode\n"]


def batched_complete(generator: Generator, prompts: list[str], max_bytes: int) -> list[str]:
    """Batched generation: `Generator.complete` decodes the prompts as one batch in one KV cache."""
    return generator.complete(prompts, max_bytes=max_bytes, temperature=0.0)


@torch.no_grad()
def greedy_without_cache(model, prompt: str, max_bytes: int) -> bytes:
    """The reference: re-run the whole sequence for every byte and take the restricted argmax."""
    ids = [*RAW_HEADER, *vocab.bytes_to_ids(prompt.encode()).tolist()]
    device = next(model.parameters()).device
    allowed = allowed_mask(model.cfg.vocab_size, raw_output_ids(), device)
    out = bytearray()
    for _ in range(max_bytes):
        logits = model(torch.tensor([ids], device=device)).logits[0, -1]
        token = int(restrict(logits, allowed).argmax())
        if token in RAW_STOP_IDS:
            break
        out.append(token - vocab.BYTE_OFFSET)
        ids.append(token)
    return bytes(out)


def test_cached_and_batched_greedy_equal_the_full_forward_reference(rig):
    model = small_model(rig, vocab_size=vocab.BYTE_VOCAB_SIZE).eval()
    with torch.no_grad():
        model.output.weight.mul_(20)  # sharper than a fresh init, so argmax ties cannot happen
    generator = Generator(model, speculative=False)
    prompts, max_bytes = PROMPTS[: rig.shapes.generate_prompts], rig.shapes.generate_bytes
    start = time.perf_counter()
    texts = batched_complete(generator, prompts, max_bytes)
    seconds = time.perf_counter() - start
    expected = [to_text(greedy_without_cache(model, prompt, max_bytes)) for prompt in prompts]
    alone = [generator.generate(prompt, max_bytes) for prompt in prompts]
    written = sum(len(g.output) for g in alone)
    rig.record("generation (greedy, KV cache)", prompts=len(prompts), bytes=written, bytes_per_s=written / seconds)
    assert texts == expected
    assert texts == [g.text for g in alone]


def test_speculative_decoding_equals_one_byte_greedy(rig):
    model = small_model(rig, n_raw_heads=2).eval()
    with torch.no_grad():
        model.output.weight.mul_(20)
    prompts, max_bytes = PROMPTS[: rig.shapes.generate_prompts], rig.shapes.generate_bytes
    one_byte = Generator(model, speculative=False).complete(prompts, max_bytes=max_bytes)
    speculative = Generator(model, speculative=True)
    texts = [speculative.generate(prompt, max_bytes) for prompt in prompts]
    forwards = sum(g.stats.forwards for g in texts)
    rig.record("speculative == greedy", bytes_per_forward=sum(g.stats.emitted for g in texts) / max(1, forwards))
    assert [g.text for g in texts] == one_byte
