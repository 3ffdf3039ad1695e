"""python -m mlx_mobilemoe.train STAGE.yaml [key=value ...] [--resume | --overwrite]

One stage per run. Settings come from the YAML stage file, then `key=value` overrides
(nested with dots: moe.capacity_factor=2, lora.rank=16; values parsed as YAML).
Data parallel: mlx.launch -n 2 --backend ring -- python -m mlx_mobilemoe.train STAGE.yaml
Exit status: 0 done, 1 an error (one line, no traceback), 2 bad settings, 130 stopped by
Ctrl-C / SIGTERM (after saving a checkpoint, unless pressed twice).
"""

from __future__ import annotations

import argparse
import json
import sys


def settings_help() -> str:
    """Every setting with its default (the stage's own defaults are applied on top)."""
    import dataclasses

    from .config import LORA_DEFAULTS, MOE_DEFAULTS, QAT_DEFAULTS, TrainConfig

    rows = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("moe", "lora", "qat"):
            continue
        d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append(f"  {f.name}={d}")
    for name, d in (("moe", MOE_DEFAULTS), ("lora", LORA_DEFAULTS), ("qat", QAT_DEFAULTS)):
        rows += [f"  {name}.{k}={v}" for k, v in d.items()]
    return ("settings (key=value; defaults before a stage's own; docs/training.md explains "
            "them):\n" + "\n".join(rows) + "\n\nrelative paths in a stage file are "
            "relative to the file; in key=value overrides, to the working directory")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlx_mobilemoe.train",
                                description="Train MobileMoE: one stage per run.",
                                epilog=settings_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="*", metavar="STAGE.yaml | key=value",
                   help="a YAML stage file and/or key=value overrides")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in `out` from its last checkpoint, exactly")
    p.add_argument("--overwrite", action="store_true",
                   help="train into an `out` that holds an earlier run (replaced) or other "
                        "files (kept); refused without it")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings and exit")
    a = p.parse_args(argv)

    if a.resume and a.overwrite:
        p.error("--resume continues the run in `out`; --overwrite starts a new one: not both")
    from .config import TrainConfigError, load_config

    files = [i for i in a.items if "=" not in i]
    overrides = [i for i in a.items if "=" in i]
    if len(files) > 1:
        p.error(f"one stage file per run, got {files}")
    try:
        cfg = load_config(files[0] if files else None, overrides)
        if a.overwrite:
            cfg.overwrite = True
    except TrainConfigError as e:
        p.error(str(e))
    if a.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    from ..runtime import fast_blas
    fast_blas(argv)  # from the shell: may restart with a faster BLAS

    from . import run
    from ..checkpoint import CheckpointError
    from .data import DataError, check_sources
    from .distributed import World
    from .loop import TrainingError, check_out_dir
    from .stages import StageError

    try:
        world = World()
        check_sources(cfg.data)  # before any tokenizing: a typo fails at once
        check_out_dir(cfg, a.resume, world.is_main)
        summary = run(cfg, resume=a.resume)
    except (CheckpointError, DataError, TrainingError, StageError, ValueError,
            OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C
        print("interrupted (nothing saved since the last checkpoint)", file=sys.stderr)
        return 130
    if world.is_main:
        print(json.dumps(summary))
    return 130 if summary.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
