"""The compute-matched study (`proxylm study`): every arm trained with the same budget, shape and
seed, and evaluated on the same held-out raw bytes (the corpus's held-out documents and the
HumanEval / MBPP reference programs).

    cfg = load_study_config("configs/study-cpu.yaml", ["arms=[bytes,proxy-bpe,raw-only]"])
    run_study(cfg)   # prepare -> train -> evaluate every (size, arm, seed) -> stability -> report

- `config`: StudyConfig and its Enums (Arm, Proxy, Part).
- `arms`: the registry ARMS of arm builders (base TrainConfig -> the arm's TrainConfig).
- `trials`: (size, arm, seed) trials, their configs, fingerprints and files.
- `run`: the parts (prepare, train, evaluate, stability, report), resumable.
- `report`: tables, findings and plots from whatever results exist.

"Compute-matched" means every arm at a size stops at the same training FLOPs (the trainer's own
count and stop) or, with a symbols budget, after the same positions. The raw-only control trains
on the raw views of exactly the documents the proxy-bpe run sees and reports the (smaller) FLOPs
it used; proxy-bpe minus raw-only is the transfer the method claims.
"""

from proxylm.study.arms import ARMS, ArmContext, ArmSpec, pin_schedule
from proxylm.study.config import Arm, CompressorSpecs, Part, Proxy, SizeConfig, StudyConfig, load_study_config
from proxylm.study.run import is_main_process, run_study
from proxylm.study.trials import Trial, trial_config, trials

__all__ = [
    "ARMS", "Arm", "ArmContext", "ArmSpec", "CompressorSpecs", "Part", "Proxy", "SizeConfig", "StudyConfig", "Trial",
    "is_main_process", "load_study_config", "pin_schedule", "run_study", "trial_config", "trials",
]
