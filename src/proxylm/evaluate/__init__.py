"""Evaluation on raw bytes: code generation (tasks, sandbox, pass@k, perturbations), bits per byte, probes.

Code generation without a model lives in four small modules that a model plugs into:

- `tasks`: HumanEval / MBPP problems (`load_tasks`), nominal prompts, stop sequences.
- `sandbox`: each generated program in its own limited, isolated, cleaned-up process (`run_program(s)`).
- `passk`: the unbiased pass@k estimator and ReCode's robust metrics (`pass_at_k`, `robust_passk`).
- `codegen`: the driver, `evaluate(problems, complete)` for any `complete(prompts) -> completions`.
- `perturb`: ReCode-style prompt and document perturbations (`perturb(item, kind, seed)`).

Submodules are imported explicitly (`from proxylm.evaluate import codegen`) so that importing this
package stays cheap.
"""
