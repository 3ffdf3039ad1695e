"""The qat stage's run files: quantization-aware training from a float checkpoint (the stage
itself is `stages.qat`).

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


@contextmanager
def int4_view(model):
    """What the Trainer writes: the int4 model of the fake-quant one."""
    yield Q.to_int4(model)


def qat_options(q: dict) -> dict:
    """mlx_mobilemoe.qat.to_qat's keywords from a config's `qat` section."""
    return dict(scales=q["scales"], init=q["init"], act_bits=q["act_bits"] or None)


def is_qat_run(folder) -> bool:
    state = Path(folder) / "train_state" / "state.json"
    return state.exists() and json.loads(state.read_text()).get("stage") == "qat"


def load_qat_run(folder) -> Model:
    """The fake-quant model of a qat run folder (float32 master weights, learned scales)."""
    import yaml

    folder = Path(folder)
    settings = yaml.safe_load((folder / "train_config.yaml").read_text())
    args = dataclasses.replace(checkpoint.load_config(folder), quantization=None)
    model = Q.to_qat(Model(args), **dict(qat_options(settings["qat"]), init="rtn"))
    params = mx.load(str(folder / "train_state" / "params.safetensors"))
    model.load_weights(list(params.items()), strict=True)
    mx.eval(model.parameters())
    return model
