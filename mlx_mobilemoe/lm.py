"""Every mlx-lm tool on MobileMoE checkpoints.

    python -m mlx_mobilemoe.lm generate --model DIR --prompt "Define: harbor"
    python -m mlx_mobilemoe.lm chat | server | lora | perplexity | cache_prompt | benchmark ...

mlx-lm finds a model's code through config.json's `model_type` (`mlx_lm.models.<type>`) and
reads weights in its own layout. `register()` teaches it MobileMoE without touching a model
folder's code: it installs `mlx_lm.models.mobilemoe` (our Model and ModelArgs) and routes
mlx-lm's weight and tokenizer loading for MobileMoE folders through this package's loader,
which reads the official QAT and BF16 layouts and our own saves, and validates them. Other
model types go through mlx-lm unchanged. In Python: `import mlx_mobilemoe.lm as lm;
lm.register()`, then `mlx_lm.load(...)` and friends work on MobileMoE folders.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

MODEL_TYPE = "mobilemoe"


def _is_mobilemoe(folder) -> bool:
    f = Path(folder) / "config.json"
    try:
        return json.loads(f.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False  # not ours to judge: mlx-lm reports its own error


def register() -> None:
    """Make mlx-lm load MobileMoE folders (idempotent)."""
    import mlx_lm.utils as U

    from . import checkpoint
    from .config import ModelArgs
    from .model import Model

    if getattr(U.load_model, "_mobilemoe", False):
        return
    module = types.ModuleType(f"mlx_lm.models.{MODEL_TYPE}")
    module.Model, module.ModelArgs = Model, ModelArgs
    module.__doc__ = "MobileMoE, registered by mlx_mobilemoe.lm (the model lives in mlx_mobilemoe)"
    sys.modules[module.__name__] = module

    mlx_load_model, mlx_load_tokenizer = U.load_model, U.load_tokenizer

    def load_model(model_path, lazy=False, strict=True, model_config=None, *args, **kwargs):
        if not _is_mobilemoe(model_path):
            return mlx_load_model(model_path, lazy, strict, model_config, *args, **kwargs)
        asked = sorted(k for k, v in (model_config or {}).items() if v)  # mlx-lm passes
        if asked:                                                        # False defaults
            raise ValueError(f"MobileMoE: these mlx-lm model options are not supported: "
                             f"{asked}")
        folder = Path(model_path)
        model = checkpoint.load_model(folder, dtype=None)  # the checkpoint's own dtype
        config = U.load_config(folder)
        # Tools that read the config's eos ids see all of ours (config.json and
        # generation_config.json), as our tokenizer does.
        config["eos_token_id"] = list(dict.fromkeys(
            model.args.eos_token_ids + checkpoint.generation_eos_ids(folder, model.args)))
        return model, config

    def load_tokenizer(model_path, tokenizer_config_extra=None, eos_token_ids=None, **kwargs):
        if not _is_mobilemoe(model_path):
            return mlx_load_tokenizer(model_path, tokenizer_config_extra,
                                      eos_token_ids=eos_token_ids, **kwargs)
        return checkpoint.load_tokenizer(Path(model_path))

    load_model._mobilemoe = load_tokenizer._mobilemoe = True
    U.load_model, U.load_tokenizer = load_model, load_tokenizer


def main(argv=None) -> None:
    """`python -m mlx_mobilemoe.lm <mlx-lm command> [options]`: mlx-lm's CLI, MobileMoE-aware."""
    given, argv = argv, list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nmlx-lm's commands and their options: python -m mlx_mobilemoe.lm <command> --help")
        return
    from .runtime import fast_blas
    fast_blas(given)  # from the shell: may restart with a faster BLAS
    register()
    from mlx_lm import cli

    sys.argv = ["mlx_lm"] + argv
    cli.main()


if __name__ == "__main__":
    main()
