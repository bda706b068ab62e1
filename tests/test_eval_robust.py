"""eval robust: robust pass@k wiring over perturbed prompts, BPB deltas over perturbed documents, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from proxylm.cli import main
from proxylm.evaluate import tasks
from proxylm.evaluate.perturb import PerturbKind, perturb_problems
from proxylm.evaluate.robust import robust_bpb, robust_code
from proxylm.model import ModelConfig, Transformer
from proxylm.model_io import save_model

CODE_DOC = ("code", b"def total(values):\n    # add them up\n    return sum(values)\n")
PROSE_DOC = ("prose", b"plain words without any function in them\n")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, uniform: bool = False) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(dim=32, n_layers=2, n_heads=4, max_seq_len=128, n_raw_heads=1)).eval()
    if uniform:
        with torch.no_grad():
            model.output.weight.zero_()
    return model


@pytest.fixture(scope="module")
def problems_and_variants():
    problems = tasks.load_tasks("humaneval", limit=2)
    variants = perturb_problems(problems, PerturbKind.FUNC_NAME, seeds=[0, 1])
    for batch in variants.values():  # the perturbation really changes every prompt
        assert all(v.prompt != p.prompt for v, p in zip(batch, problems))
    return problems, variants


def answers(problems, variants, nominal_only: bool):
    """A complete() that answers each prompt it knows with that problem's reference, and anything else with `pass`."""
    known = {p.prompt: p.canonical_solution for p in problems}
    if not nominal_only:
        known.update({v.prompt: v.canonical_solution for batch in variants.values() for v in batch})
    return lambda prompts: [known.get(p, "    pass\n") for p in prompts]


def test_a_model_right_under_every_perturbation_is_fully_robust(problems_and_variants):
    problems, variants = problems_and_variants
    result = robust_code(problems, answers(problems, variants, nominal_only=False), [PerturbKind.FUNC_NAME], seeds=[0, 1])
    assert result["pass@1"] == 1.0
    assert result["robust_pass@1"] == 1.0 and result["robust_drop@1"] == 0.0
    assert set(result["kinds"]) == {"func_name"} and result["problems"] == 2


def test_a_model_right_only_on_nominal_prompts_drops_to_zero(problems_and_variants):
    problems, variants = problems_and_variants
    result = robust_code(problems, answers(problems, variants, nominal_only=True), [PerturbKind.FUNC_NAME], seeds=[0, 1])
    assert result["pass@1"] == 1.0
    assert result["robust_pass@1"] == 0.0 and result["robust_drop@1"] == 1.0


def test_bpb_delta_is_zero_for_a_model_indifferent_to_text():
    result = robust_bpb(tiny_model(uniform=True), [CODE_DOC, PROSE_DOC], kinds=list(PerturbKind), seeds=[0], context=64)
    assert result["bpb_delta"] == pytest.approx(0.0, abs=1e-9)
    assert set(result["kinds"]) == {k.value for k in PerturbKind}


def test_bpb_delta_compares_each_perturbed_copy_with_the_clean_documents():
    model = tiny_model()
    result = robust_bpb(model, [CODE_DOC, PROSE_DOC], kinds=[PerturbKind.FUNC_NAME], seeds=[0, 1], context=64)
    func = result["kinds"]["func_name"]
    assert [run["changed"] for run in func["seeds"]] == [1, 1]  # the function is renamed; prose has none
    deltas = [run["bpb"] - result["bpb"] for run in func["seeds"]]
    assert func["bpb_delta"] == pytest.approx(sum(deltas) / 2) and func["worst_bpb_delta"] == pytest.approx(max(deltas))
    untouched = robust_bpb(model, [PROSE_DOC], kinds=[PerturbKind.FUNC_NAME], seeds=[0], context=64)
    assert untouched["bpb_delta"] == 0.0


def test_cli_eval_robust_reports_robust_pass_and_bpb_delta(tmp_path, capsys):
    save_model(tiny_model(), tmp_path / "ckpt")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": CODE_DOC[1].decode()}) + "\n")
    out = tmp_path / "robust.json"
    argv = ["eval", "robust", "--ckpt", str(tmp_path / "ckpt"), "--limit", "1", "--kinds", "docstring", "--seeds", "1",
            "--max-bytes", "16", "--corpus", str(tmp_path / "c.jsonl"), "--split", "all", "--bpb-seeds", "1", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert 0.0 <= result["robust_pass@1"] <= result["pass@1"] <= 1.0
    assert result["kinds_evaluated"] == ["docstring"] and result["problems"] == 1
    assert result["text"]["documents"] == 1 and "bpb_delta" in result["text"]
    assert "robust_pass@1" in capsys.readouterr().out


def test_cli_eval_robust_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "robust", "--ckpt", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint not found" in err
    assert main(["eval", "robust", "--ckpt", str(tmp_path / "missing"), "--no-code"]) == 2
    assert "--no-code leaves nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["eval", "robust", "--ckpt", "x", "--kinds", "spelling"])
    assert exc.value.code == 2
    assert "unknown perturbation" in capsys.readouterr().err
