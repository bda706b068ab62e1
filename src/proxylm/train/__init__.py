"""Training: the loop, optimiser and schedule, checkpoints, distribution, metrics.

    from proxylm.train import load_train_config, train
    result = train(load_train_config("configs/tiny-proxy-bpe.yaml", ["run.max_steps=200"]))
    result.loss_raw, result.loss_compressed, result.checkpoint, result.plot
"""

from proxylm.train.config import TrainConfig, load_train_config
from proxylm.train.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "load_train_config", "train"]
