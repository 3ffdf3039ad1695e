"""The stages: pretrain, midtrain, sft, lora, qat. `STAGES` maps a stage name to a function
`run(cfg, resume=False) -> summary dict`; a new stage adds itself there and its defaults
(possibly none) to `config.STAGE_DEFAULTS`, which is what makes its name known."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from functools import partial
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from .. import checkpoint
from .. import qat as Q
from ..config import PRESETS, ModelArgs
from ..fsutil import atomic_folder
from ..model import Model
from . import data as D
from .config import TrainConfig
from .distributed import World
from .lora import apply_lora, fused_view
from .loop import Trainer
from .qat_stage import int4_view, qat_options


class StageError(ValueError):
    """A stage asked for something it cannot do."""


# --- model and tokenizer ----------------------------------------------------------------

def _preset_spec(spec):
    """(preset name, field overrides) when `spec` names a preset, else None."""
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("preset", None)
        if name is not None and name not in PRESETS:
            raise StageError(f"unknown preset {name!r}")
        return name, spec
    if isinstance(spec, str) and spec in PRESETS:
        return spec, {}
    return None


def init_weights(model: Model, std: float) -> None:
    """From-scratch init: N(0, std) everywhere, residual outputs scaled by 1/sqrt(2L)
    (GPT-2), norms at one, selection biases at zero."""
    L = model.args.num_hidden_layers
    out = []
    for path, p in tree_flatten(model.parameters()):
        if path.endswith("norm.weight"):
            out.append((path, mx.ones_like(p)))
        elif path.endswith("expert_bias"):
            out.append((path, mx.zeros_like(p)))
        else:
            s = std / (2 * L) ** 0.5 if path.endswith(
                ("o_proj.weight", "down_proj.weight", "experts.down.weight")) else std
            out.append((path, (mx.random.normal(p.shape) * s).astype(p.dtype)))
    model.update(tree_unflatten(out))
    mx.eval(model.parameters())


def build_model(cfg: TrainConfig, world: World):
    """(model, tokenizer folder, from_checkpoint) for the stage's `model` and `tokenizer`."""
    spec = _preset_spec(cfg.model)
    if spec is None:
        folder = checkpoint.resolve(cfg.model)
        model = checkpoint.load_model(folder)
        tok_dir = Path(cfg.tokenizer) if isinstance(cfg.tokenizer, str) else folder
        if isinstance(cfg.tokenizer, dict) and world.is_main:
            # e.g. configs/pretrain.yaml's {vocab_size: ...} when continuing from a checkpoint
            print(f"note: model is a checkpoint, so its own tokenizer is used (tokenizer: "
                  f"{cfg.tokenizer} trains a new one only for a model from a preset)",
                  file=sys.stderr)
        return model, tok_dir, True
    name, fields = spec
    tok_dir = _tokenizer_for_preset(cfg, world)
    values = {**PRESETS[name], **fields} if name else dict(fields)
    if tok_dir is not None:
        values.update(_tokenizer_fields(tok_dir))
    args = ModelArgs.from_dict(values)
    if tok_dir is None:
        raise StageError("a model from a preset needs a tokenizer: set tokenizer to a folder "
                         "with tokenizer.json or to {vocab_size: N} to train one on the data")
    model = Model(args)
    init_weights(model, cfg.init_std)
    return model, tok_dir, False


def _tokenizer_fields(tok_dir: Path) -> dict:
    from ..tokenizer import BOS, EOS

    tok = D.hf_tokenizer(tok_dir)
    ids = D.special_token_ids(tok_dir)
    out = {"vocab_size": tok.get_vocab_size()}
    if BOS in ids:
        out["bos_token_id"] = ids[BOS]
    if EOS in ids:
        out["eos_token_id"] = ids[EOS]
    return out


def _tokenizer_for_preset(cfg: TrainConfig, world: World):
    t = cfg.tokenizer
    if t is None:
        return None
    if isinstance(t, str):
        if not (Path(t) / "tokenizer.json").exists():
            raise StageError(f"{t}: no tokenizer.json")
        return Path(t)
    if not isinstance(t, dict) or "vocab_size" not in t:
        raise StageError("tokenizer must be a folder or {vocab_size: N, sample_mb: M, "
                         "split: llama3|lines}")
    vocab, sample_mb = int(t["vocab_size"]), float(t.get("sample_mb", 8))
    split = t.get("split", "llama3")
    srcs = list(cfg.data) if isinstance(cfg.data, dict) else D.as_list(cfg.data)
    key = hashlib.sha256(json.dumps([[str(Path(s).resolve()), Path(s).stat().st_size]
                                     for s in srcs] + [vocab, sample_mb, split]).encode())
    out = cfg.cache / f"tokenizer-{key.hexdigest()[:12]}"
    if world.is_main and not (out / "tokenizer.json").exists():
        train_base_tokenizer(srcs, vocab, out, cfg.val_fraction, sample_mb, split)
    world.barrier()
    return out


def train_base_tokenizer(sources, vocab_size: int, out: Path, val_fraction: float = 0.05,
                         sample_mb: float = 8, split: str = "llama3") -> Path:
    """Byte-level BPE on the training split of each source (at most sample_mb each), with no
    chat template: a base model's prompt is used raw. `split`: see `bpe.SPLITS`."""
    from .bpe import train_bpe

    def texts():
        for s in sources:
            if D.source_kind(Path(s)) != "text":
                raise StageError(f"{s}: train the tokenizer on text sources (not {s})")
            budget = int(sample_mb * 1e6)
            for doc in D.documents(Path(s), val_fraction)[0]:
                for i in range(0, min(len(doc), budget), 1 << 16):
                    yield doc[i:min(i + (1 << 16), budget)]
                budget -= len(doc)
                if budget <= 0:
                    break

    with atomic_folder(out) as tmp:
        train_bpe(texts(), vocab_size, tmp, split=split, chat_template=None)
    return out


# --- stages -----------------------------------------------------------------------------

def _prepared_domains(cfg, tok_dir, world):
    if world.is_main:
        D.open_domains(cfg.data, tok_dir, cfg.cache, cfg.val_fraction)
    world.barrier()
    return D.open_domains(cfg.data, tok_dir, cfg.cache, cfg.val_fraction)


def _lm_eval_sets(domains, seq_len):
    return {d.name: partial(lambda toks, bs, nb: D.eval_windows(toks, seq_len, bs, nb), d.val)
            for d in domains if len(d.val) > 1}


def _chat_eval_sets(val, data: D.ChatData):
    def batches(bs, nb):
        n = len(val) if not nb else min(len(val), bs * nb)
        for i in range(0, n, bs):
            yield data.rows(val[i:i + bs], data.seq_len)
    return {"chat": batches} if val else {}


def _summary(cfg, model, res):
    res = dict(res)
    res.update({"stage": cfg.stage, "out": str(cfg.out_dir),
                "params": model.args.param_counts()})
    return res


def pretrain(cfg: TrainConfig, resume: bool = False) -> dict:
    """Packed fixed-length sequences, drop-and-pad dispatch by default."""
    world = World()
    mx.random.seed(cfg.seed)
    model, tok_dir, from_ckpt = build_model(cfg, world)
    if cfg.stage == "midtrain":
        if not from_ckpt:
            raise StageError("midtrain continues from a checkpoint: set model to a folder")
        if cfg.seq_len > model.args.max_position_embeddings:
            model.args.max_position_embeddings = cfg.seq_len
    domains, weights = _prepared_domains(cfg, tok_dir, world)
    data = D.PackedData(domains, weights, cfg.seq_len, cfg.seed, align=cfg.align)
    meta = {"domains": {d.name: {"weight": w, "train_tokens": int(len(d.train)),
                                 "val_tokens": int(len(d.val))}
                        for d, w in zip(domains, weights)}}
    trainer = Trainer(cfg, model, data, tok_dir, _lm_eval_sets(domains, cfg.seq_len),
                      world=world, resume=resume, extra_meta=meta)
    return _summary(cfg, model, trainer.run())


def midtrain(cfg: TrainConfig, resume: bool = False) -> dict:
    """Pretraining continued from a checkpoint with longer context and a new data mix."""
    return pretrain(cfg, resume)


def _chat_tokenizer(cfg, tok_dir: Path, world) -> tuple:
    """(tokenizer folder that has a chat template, template)."""
    from ..tokenizer import CHAT_TEMPLATE

    t = D.chat_template_of(tok_dir)
    if t is not None:
        return tok_dir, t
    out = cfg.cache / "tokenizer-chat"
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        for f in ("tokenizer.json", "special_tokens_map.json"):
            if (tok_dir / f).exists():
                shutil.copy2(tok_dir / f, out / f)
        tc = D.tokenizer_config(tok_dir)
        tc["chat_template"] = CHAT_TEMPLATE
        (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n")
    world.barrier()
    return out, CHAT_TEMPLATE


def _chat_data(cfg, model, tok_dir, world):
    from ..tokenizer import EOT, PAD

    tok_dir, template = _chat_tokenizer(cfg, tok_dir, world)
    train, val = D.load_chat(cfg.data, tok_dir, template, cfg.val_fraction)
    ids = D.special_token_ids(tok_dir)
    data = D.ChatData(train, cfg.seq_len, cfg.seed, pad_id=ids.get(PAD, 0))
    if EOT in ids and ids[EOT] not in model.args.eos_token_ids:  # stop at end of turn
        model.args.eos_token_id = model.args.eos_token_ids + [ids[EOT]]
    return tok_dir, data, _chat_eval_sets(val, data)


def _stage_data(cfg, model, tok_dir, world):
    """(tokenizer folder, data, eval sets): chat jsonl through the chat template, else packed
    text windows (line-aligned when cfg.align says so)."""
    if D.is_chat_data(cfg.data):
        return _chat_data(cfg, model, tok_dir, world)
    domains, weights = _prepared_domains(cfg, tok_dir, world)
    data = D.PackedData(domains, weights, cfg.seq_len, cfg.seed, align=cfg.align)
    return tok_dir, data, _lm_eval_sets(domains, cfg.seq_len)


def sft(cfg: TrainConfig, resume: bool = False) -> dict:
    """Chat data through the chat template, loss on assistant tokens, dropless dispatch."""
    world = World()
    mx.random.seed(cfg.seed)
    model, tok_dir, _ = build_model(cfg, world)
    if not D.is_chat_data(cfg.data):
        raise StageError("sft needs {'messages': [...]} jsonl data")
    tok_dir, data, evals = _chat_data(cfg, model, tok_dir, world)
    trainer = Trainer(cfg, model, data, tok_dir, evals, world=world, resume=resume)
    return _summary(cfg, model, trainer.run())


def lora(cfg: TrainConfig, resume: bool = False) -> dict:
    """Adapters on attention and on every routed expert; writes the fused checkpoint."""
    world = World()
    mx.random.seed(cfg.seed)
    model, tok_dir, from_ckpt = build_model(cfg, world)
    if not from_ckpt:
        raise StageError("lora adapts a checkpoint: set model to a folder")
    lc = cfg.lora
    apply_lora(model, rank=int(lc["rank"]), alpha=float(lc["alpha"]),
               dropout=float(lc["dropout"]), targets=lc["targets"])
    tok_dir, data, evals = _stage_data(cfg, model, tok_dir, world)
    trainer = Trainer(cfg, model, data, tok_dir, evals, save_view=fused_view, world=world,
                      resume=resume)
    return _summary(cfg, model, trainer.run())


def qat(cfg: TrainConfig, resume: bool = False) -> dict:
    """Quantization-aware training from a float checkpoint (train/qat_stage.py): the model in
    fake-quant form, checkpoints written as the int4 model of it."""
    world = World()
    mx.random.seed(cfg.seed)
    model, tok_dir, from_ckpt = build_model(cfg, world)
    if not from_ckpt:
        raise StageError("qat starts from a trained float checkpoint: set model to a folder")
    if model.args.is_quantized:
        raise StageError("qat needs the float (BF16) checkpoint; this one is already int4")
    try:
        Q.to_qat(model, **qat_options(cfg.qat))
    except ValueError as e:
        raise StageError(f"qat settings: {e}") from None
    tok_dir, data, evals = _stage_data(cfg, model, tok_dir, world)
    trainer = Trainer(cfg, model, data, tok_dir, evals, save_view=int4_view, world=world,
                      resume=resume)
    return _summary(cfg, model, trainer.run())


STAGES = {"pretrain": pretrain, "midtrain": midtrain, "sft": sft, "lora": lora, "qat": qat}
