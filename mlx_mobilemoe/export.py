"""Export to the official QAT layout (int4 g32, fp16 scales, float32 router).

    python -m mlx_mobilemoe.export SRC OUT [--method rtn|mse] [--overwrite]

SRC is a float MobileMoE checkpoint (folder or Hugging Face id): post-training quantization
by round-to-nearest (`rtn`, absmax / 7) or per-group MSE scale search (`mse`). Or SRC holds
QAT weights, a run folder of the train CLI's qat stage (float32 master in train_state/) or a
`qat.save_qat` folder (qat.json): its fake-quant integers and scales are written exactly,
and --method does not apply.

OUT must not exist or be empty; --overwrite replaces the checkpoint files of an existing OUT
and keeps any other files in it. OUT may not be SRC itself (a run folder would lose its
train_state/ and metrics).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import checkpoint, fsutil, qat
from .model import Model


def export(model: Model, tokenizer, path, method: str = "rtn", overwrite: bool = False) -> Path:
    """Write `model` as an official int4 folder. A QAT model exports its own integers; a
    float model is quantized by `method` (a copy: the float model is left as it was).
    An existing folder's checkpoint files are replaced; files the project did not write
    are refused (fsutil.OutputFolderError), or kept with overwrite=True."""
    if model.args.is_quantized:
        int4 = model
    elif qat.is_qat(model):
        int4 = qat.to_int4(model)
    else:
        int4 = qat.ptq(qat.to_float(model), method)
    path = Path(path)
    with fsutil.atomic_folder(path, foreign="keep" if overwrite else "refuse") as tmp:
        checkpoint.write_folder(int4, tokenizer, tmp)
    return path


def check_destination(src: Path, out, overwrite: bool = False) -> None:
    """OUT may not be SRC (or hold it), and must be new or empty unless overwrite."""
    src, out = Path(os.path.realpath(src)), Path(os.path.realpath(out))
    if src.is_relative_to(out):  # out == src included
        raise fsutil.OutputFolderError(
            f"{out} is the source folder (or holds it): exporting onto it would replace "
            "what is there (a run's train_state/ and metrics); choose another folder")
    if out.exists() and not out.is_dir():
        raise fsutil.OutputFolderError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise fsutil.OutputFolderError(
            f"{out} exists and is not empty: choose another folder, or --overwrite to "
            "replace the checkpoint files in it (other files are kept)")


def is_qat_state(folder: Path) -> bool:
    """A QAT state folder (qat.save_qat) or a qat training run (train_state of stage qat)."""
    from .train.qat_stage import is_qat_run

    return (Path(folder) / qat.QAT_STATE).exists() or is_qat_run(folder)


def export_folder(src, out, method: str = "rtn", overwrite: bool = False) -> Path:
    from .train.qat_stage import is_qat_run, load_qat_run

    folder = checkpoint.resolve(src)
    check_destination(folder, out, overwrite)
    if (folder / qat.QAT_STATE).exists():
        model = qat.load_qat(folder)
    elif is_qat_run(folder):
        model = load_qat_run(folder)
    else:
        model = checkpoint.load_model(folder)
        if model.args.is_quantized:
            raise checkpoint.CheckpointError(
                f"{src} is already an int4 checkpoint; export needs float or QAT weights")
    tok = checkpoint.load_tokenizer(folder) if (folder / "tokenizer.json").exists() else None
    return export(model, tok, out, method, overwrite)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlx_mobilemoe.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="float checkpoint folder / HF id, or a QAT state folder")
    p.add_argument("out", help="output folder (official QAT layout)")
    p.add_argument("--method", choices=["rtn", "mse"], default="rtn",
                   help="PTQ scales for a float source (default rtn)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint files of an existing OUT (other files kept)")
    a = p.parse_args(argv)
    from .runtime import fast_blas
    fast_blas(argv)  # from the shell: may restart with a faster BLAS
    try:
        folder = checkpoint.resolve(a.src)
        path = export_folder(folder, a.out, a.method, a.overwrite)
    except (checkpoint.CheckpointError, fsutil.OutputFolderError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cfg = json.loads((path / "config.json").read_text())
    print(json.dumps({"out": str(path), "format": cfg["quantization"]["format"],
                      "method": "qat" if is_qat_state(folder) else a.method}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
