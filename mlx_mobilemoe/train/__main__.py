"""python -m mlx_mobilemoe.train STAGE.yaml [key=value ...] [--resume]

One stage per run. Settings come from the YAML stage file, then `key=value` overrides
(nested with dots: moe.capacity_factor=2, lora.rank=16; values parsed as YAML).
Data parallel: mlx.launch -n 2 --backend ring -- python -m mlx_mobilemoe.train STAGE.yaml
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlx_mobilemoe.train",
                                description="Train MobileMoE: one stage per run.")
    p.add_argument("items", nargs="*", metavar="STAGE.yaml | key=value",
                   help="a YAML stage file and/or key=value overrides")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in `out` from its last checkpoint, exactly")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings and exit")
    a = p.parse_args(argv)

    from . import run
    from .config import TrainConfigError, load_config

    files = [i for i in a.items if "=" not in i]
    overrides = [i for i in a.items if "=" in i]
    if len(files) > 1:
        p.error(f"one stage file per run, got {files}")
    try:
        cfg = load_config(files[0] if files else None, overrides)
    except TrainConfigError as e:
        p.error(str(e))
    if a.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from .distributed import World

    from ..checkpoint import CheckpointError
    from .data import DataError
    from .loop import TrainingError
    from .stages import StageError

    try:
        summary = run(cfg, resume=a.resume)
    except (CheckpointError, DataError, TrainingError, StageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if World().is_main:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
