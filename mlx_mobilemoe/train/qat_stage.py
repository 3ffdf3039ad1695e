"""The qat stage: quantization-aware training from a float checkpoint.

    python -m mlx_mobilemoe.train stage=qat model=FLOAT_CKPT data=... out=runs/qat

The model goes into fake-quant form (mlx_mobilemoe.qat.to_qat; settings in the `qat`
section: scales, init, act_bits) and trains like any stage (dropless dispatch by default: the
routing inference will use). Every checkpoint `out/` is written in the official int4 layout,
with exactly the integers and fp16 scales the fake-quant forward pass used; out/train_state
keeps the float32 master weights (and learned scales) for --resume and for
`python -m mlx_mobilemoe.export out/ SHIP/` (a clean copy without the run files).
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path

import mlx.core as mx

from .. import checkpoint
from .. import qat as Q
from ..model import Model
from . import data as D
from .distributed import World
from .loop import Trainer
from .stages import StageError, _chat_data, _lm_eval_sets, _prepared_domains, _summary, \
    build_model


@contextmanager
def int4_view(model):
    """What the Trainer writes: the int4 model of the fake-quant one."""
    yield Q.to_int4(model)


def _options(q: dict) -> dict:
    return dict(scales=q["scales"], init=q["init"], act_bits=q["act_bits"] or None)


def qat(cfg, resume: bool = False) -> dict:
    world = World()
    mx.random.seed(cfg.seed)
    model, tok_dir, from_ckpt = build_model(cfg, world)
    if not from_ckpt:
        raise StageError("qat starts from a trained float checkpoint: set model to a folder")
    if model.args.is_quantized:
        raise StageError("qat needs the float (BF16) checkpoint; this one is already int4")
    try:
        Q.to_qat(model, **_options(cfg.qat))
    except ValueError as e:
        raise StageError(f"qat settings: {e}") from None
    if D.is_chat_data(cfg.data):
        tok_dir, data, evals = _chat_data(cfg, model, tok_dir, world)
    else:
        domains, weights = _prepared_domains(cfg, tok_dir, world)
        data = D.PackedData(domains, weights, cfg.seq_len, cfg.seed)
        evals = _lm_eval_sets(domains, cfg.seq_len)
    trainer = Trainer(cfg, model, data, tok_dir, evals, save_view=int4_view, world=world,
                      resume=resume)
    return _summary(cfg, model, trainer.run())


def is_qat_run(folder) -> bool:
    state = Path(folder) / "train_state" / "state.json"
    return state.exists() and json.loads(state.read_text()).get("stage") == "qat"


def load_qat_run(folder) -> Model:
    """The fake-quant model of a qat run folder (float32 master weights, learned scales)."""
    import yaml

    folder = Path(folder)
    settings = yaml.safe_load((folder / "train_config.yaml").read_text())
    args = dataclasses.replace(checkpoint.load_config(folder), quantization=None)
    model = Q.to_qat(Model(args), **dict(_options(settings["qat"]), init="rtn"))
    params = mx.load(str(folder / "train_state" / "params.safetensors"))
    model.load_weights(list(params.items()), strict=True)
    mx.eval(model.parameters())
    return model
