"""proxylm checkpoints inside EleutherAI's lm-evaluation-harness (`pip install proxylm[lm-eval]`).

    from proxylm.evaluate.harness import ProxyLM, evaluate_tasks
    lm = ProxyLM.from_checkpoint("runs/x/final")
    results = evaluate_tasks(lm, ["my_task"], include_path="tasks/")   # lm_eval.simple_evaluate underneath
    # or: lm_eval --model proxylm --model_args ckpt=runs/x/final --tasks ...  (after `import proxylm.evaluate.harness`)

Design choices:
- Text is raw UTF-8 bytes, framed as the model was trained (`<bos> <raw>` + bytes, or `<bos>` +
  bytes for a vanilla byte model); there is no tokenizer, so lm-eval's "tokens" are bytes.
  A token model (trained on compressed symbols only) is refused, as by `generate`.
- `loglikelihood_rolling` is `eval bpb`'s scorer (proxylm.evaluate.bpb.score): same framing,
  same sliding window, each byte scored once, cross-entropy over the whole vocabulary. So
  lm-eval's `bits_per_byte` of a document equals `proxylm eval bpb` on it.
- `loglikelihood(context, continuation)`: the continuation's bytes are scored after the context
  in one window; a context too long for it loses its oldest bytes (the header stays). Greedy
  means every continuation byte is the argmax among the ids raw-byte decoding may write.
  Requests go through in padded batches of `batch_size`.
- `generate_until`: the batched decoder (Generator.generate_batch) with each request's own stop
  strings (`until`) and `max_gen_toks` (bytes); requests with the same sampling settings share
  batches. `do_sample=False` or temperature 0 is greedy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from proxylm import vocab
from proxylm.errors import UserError
from proxylm.evaluate.bpb import HEADERS, View, frame, resolve_window, score
from proxylm.evaluate.generate import Generator, allowed_mask, default_device, raw_output_ids

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    if exc.name is None or not exc.name.startswith("lm_eval"):
        raise
    raise UserError("the lm-eval adapter needs lm-evaluation-harness: pip install 'proxylm[lm-eval]'") from None

DEFAULT_MAX_GEN_BYTES = 256


@register_model("proxylm")
class ProxyLM(LM):
    """A raw-byte proxylm model as an lm-eval `LM`."""

    def __init__(self, ckpt: str | None = None, model: torch.nn.Module | None = None, view: View = View.RAW,
                 device: str | None = None, batch_size: int | str = 16, max_gen_bytes: int = DEFAULT_MAX_GEN_BYTES):
        super().__init__()
        if (ckpt is None) == (model is None):
            raise UserError("ProxyLM needs exactly one of ckpt= (a checkpoint path) or model=")
        if ckpt is not None:
            from proxylm.evaluate.bpb import EvalCheckpoint

            loaded = EvalCheckpoint.load(ckpt, device or default_device())
            model, view = loaded.model, loaded.view
        if view.needs_compressor:
            raise UserError(f"a {view.value} model reads compressed symbols only: lm-eval text needs a raw-byte model")
        self.model = model.eval()
        self.view = view
        self.header = list(HEADERS[view])
        self.generator = Generator(self.model, sentinels=view is View.RAW)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto" falls back to 16
        self.max_gen_bytes = int(max_gen_bytes)
        self.max_len = self.model.cfg.max_seq_len

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs: Any) -> ProxyLM:
        return cls(ckpt=str(path), **kwargs)

    # ---- scoring ----------------------------------------------------------------------------------

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        docs = [frame(str(i), r.args[0].encode("utf-8"), self.view) for i, r in enumerate(requests)]
        context, stride = resolve_window(self.model, None, None, len(self.header))
        scored = score(self.model, docs, context, stride, self.batch_size)
        return [-d.nats for d in scored]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [(r.args[0].encode("utf-8"), r.args[1].encode("utf-8")) for r in requests]
        out: list[tuple[float, bool]] = []
        for start in range(0, len(pairs), self.batch_size):
            out += self._score_continuations(pairs[start : start + self.batch_size])
        return out

    @torch.no_grad()
    def _score_continuations(self, pairs: Sequence[tuple[bytes, bytes]]) -> list[tuple[float, bool]]:
        """Log-probability of each continuation after its context, and whether greedy decoding writes it."""
        rows = [self._ids(context, continuation) for context, continuation in pairs]
        width = max(len(ids) for ids, _ in rows)
        device = next(self.model.parameters()).device
        ids = torch.full((len(rows), width), vocab.PAD, dtype=torch.long)
        for i, (row, _) in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        logprobs = F.log_softmax(self.model(ids.to(device)).logits.float(), dim=-1)  # (B, T, V)
        allowed = allowed_mask(self.model.cfg.vocab_size, raw_output_ids(), device)
        greedy = logprobs.masked_fill(~allowed, float("-inf")).argmax(dim=-1)  # (B, T)
        results = []
        for i, (row, n) in enumerate(rows):
            targets = torch.tensor(row[len(row) - n :], device=device)  # (n,)
            at = slice(len(row) - n - 1, len(row) - 1)  # positions that predict the continuation
            ll = logprobs[i, at].gather(-1, targets[:, None]).sum()
            results.append((float(ll), bool((greedy[i, at] == targets).all())))
        return results

    def _ids(self, context: bytes, continuation: bytes) -> tuple[list[int], int]:
        """Header + context + continuation ids, the context cut from the left to fit; and the continuation's length."""
        room = self.max_len - len(self.header) - len(continuation)
        if room < 0 or (room == 0 and not self.header):
            raise UserError(f"a {len(continuation)}-byte continuation does not fit the model's {self.max_len}-id window")
        context = context[len(context) - room :] if len(context) > room else context
        return self.header + vocab.bytes_to_ids(context + continuation).tolist(), len(continuation)

    # ---- generation ---------------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[tuple[float, float], list[int]] = {}
        settings = [self._gen_settings(r.args[1]) for r in requests]
        for i, s in enumerate(settings):
            groups.setdefault((s["temperature"], s["top_p"]), []).append(i)
        texts: list[str] = [""] * len(requests)
        for (temperature, top_p), members in groups.items():
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                gens = self.generator.generate_batch(
                    [requests[i].args[0] for i in batch], [settings[i]["max_bytes"] for i in batch],
                    temperature=temperature, top_p=top_p, seeds=batch, row_stops=[settings[i]["until"] for i in batch],
                )
                for i, g in zip(batch, gens):
                    texts[i] = g.text
        return texts

    def _gen_settings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0
        return {
            "until": until,
            "max_bytes": int(kwargs.get("max_gen_toks", self.max_gen_bytes)),
            "temperature": temperature,
            "top_p": float(kwargs.get("top_p", 1.0)) if temperature > 0 else 1.0,
        }


def evaluate_tasks(
    lm: ProxyLM, tasks: Iterable[str], include_path: str | Path | None = None, limit: int | None = None,
    num_fewshot: int | None = None, seed: int = 0,
) -> dict[str, Any]:
    """Run lm-eval tasks (built-in ones and those defined under `include_path`) on `lm`; lm-eval's results dict."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise UserError(f"--include-path is not a directory: {include_path}")
    tasks = list(tasks)
    manager = None
    if include_path is not None:  # indexing lm-eval's own tasks takes most of a minute: skip it when it can
        manager = TaskManager(include_path=str(include_path), include_defaults=False)
    if manager is None or any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=str(include_path) if include_path else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown lm-eval task(s): {', '.join(unknown)} (check --tasks and --include-path)")
    results = simple_evaluate(
        model=lm, tasks=tasks, task_manager=manager, limit=limit, num_fewshot=num_fewshot, log_samples=False,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
    )
    return _plain(results)


def _plain(value: Any) -> Any:
    """lm-eval's results as JSON-ready data (numpy scalars become Python numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
