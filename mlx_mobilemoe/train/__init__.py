"""Training MobileMoE: stages (pretrain, midtrain, sft, lora), MoE mechanics, data parallel.

`python -m mlx_mobilemoe.train STAGE.yaml [key=value ...] [--resume]`; see docs/training.md.
"""

from .config import TrainConfig, load_config, make_config
from .stages import STAGES


def run(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run one stage; returns its summary (final step, held-out results, output folder)."""
    return STAGES[cfg.stage](cfg, resume=resume)


__all__ = ["STAGES", "TrainConfig", "load_config", "make_config", "run"]
