"""Upcycling dense Qwen3 / Llama checkpoints (Hugging Face layout) into MoEs."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import CORPUS, add_tokenizer
from mlx.utils import tree_flatten

from mlx_mobilemoe import upcycle as U
from mlx_mobilemoe.checkpoint import read_tensors
from mlx_mobilemoe.config import ConfigError
from mlx_mobilemoe.model import Model

QWEN3 = dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], hidden_size=64,
             num_hidden_layers=3, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6, vocab_size=320,
             max_position_embeddings=512, rope_theta=10000.0, tie_word_embeddings=True,
             bos_token_id=0, eos_token_id=1)
LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64,
             num_hidden_layers=2, intermediate_size=96, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=320,
             max_position_embeddings=512, rope_theta=10000.0, tie_word_embeddings=True,
             bos_token_id=0, eos_token_id=1)
X = mx.array([[3, 5, 7, 11, 13, 2, 9, 100, 200, 31, 17]])


def _dense(folder: Path, cfg: dict, tokenizer_dir, seed=0):
    """A random dense mlx-lm model written in the Hugging Face layout (float32)."""
    from mlx_lm.utils import _get_classes

    mx.random.seed(seed)
    model_cls, args_cls = _get_classes(cfg)
    model = model_cls(args_cls.from_dict(cfg))
    # Non-trivial norms (Qwen3's q_norm / k_norm stay at one: MobileMoE's are weightless).
    params = [(k, mx.random.uniform(0.5, 1.5, v.shape) if k.endswith("layernorm.weight")
               or k == "model.norm.weight" else v)
              for k, v in tree_flatten(model.parameters())]
    model.load_weights(params)
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(params),
                        metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg))
    add_tokenizer(folder, tokenizer_dir)
    return model


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory, tokenizer_dir):
    d = tmp_path_factory.mktemp("qwen3") / "dense"
    return d, _dense(d, QWEN3, tokenizer_dir)


def _max_err(a, b):
    return float(mx.abs(a - b).max())


@pytest.mark.parametrize("plan", [
    U.Plan(experts=4, top_k=4, granular=4),  # fine-grained, one copy of each slice
    U.Plan(experts=8, top_k=8, granular=4),  # two copies of each slice
    U.Plan(experts=4, top_k=2, layers=[1]),  # TinyMoE copies (renormalised: any k is exact)
])
def test_granular_split_reproduces_dense_logits_hf(qwen3, tmp_path, plan):
    from mlx_lm.utils import load_model

    d, dense = qwen3
    U.upcycle(d, tmp_path / "moe", plan)
    moe, _ = load_model(tmp_path / "moe")
    cfg = json.loads((tmp_path / "moe" / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_moe"
    assert cfg["mlp_only_layers"] == [i for i in range(3) if plan.layers and i not in plan.layers]
    ref = dense(X)
    assert _max_err(moe(X), ref) < 1e-5 * max(1.0, float(mx.abs(ref).max()))


@pytest.mark.parametrize("plan", [
    U.Plan(experts=3, top_k=3, granular=4, shared=1, format="mobilemoe"),
    U.Plan(experts=6, top_k=6, granular=4, shared=1, format="mobilemoe"),
    U.Plan(experts=4, top_k=2, format="mobilemoe"),
    U.Plan(experts=4, top_k=1, granular=2, shared=1, format="mobilemoe"),  # exact at top-1
])
def test_granular_split_reproduces_dense_logits_mobilemoe(qwen3, plan):
    d, dense = qwen3
    cfg, w, _ = U.read_dense(d)
    moe = U.to_mobilemoe(cfg, w, plan)
    ref = dense(X)
    assert _max_err(moe(X), ref) < 1e-5 * max(1.0, float(mx.abs(ref).max()))


def test_llama_to_mixtral_and_mobilemoe(tmp_path, tokenizer_dir):
    from mlx_lm.utils import load_model

    dense = _dense(tmp_path / "llama", LLAMA, tokenizer_dir, seed=3)
    ref = dense(X)
    U.upcycle(tmp_path / "llama", tmp_path / "mix", U.Plan(experts=6, top_k=6, granular=3))
    mix, _ = load_model(tmp_path / "mix")
    assert json.loads((tmp_path / "mix" / "config.json").read_text())["model_type"] == "mixtral"
    assert _max_err(mix(X), ref) < 1e-5 * float(mx.abs(ref).max())
    cfg, w, _ = U.read_dense(tmp_path / "llama")
    moe = U.to_mobilemoe(cfg, w, U.Plan(experts=2, top_k=2, granular=3, shared=1,
                                        format="mobilemoe"))
    assert not moe.args.use_qk_norm
    assert _max_err(moe(X), ref) < 1e-5 * float(mx.abs(ref).max())
    with pytest.raises(ConfigError, match="every layer"):
        U.upcycle(tmp_path / "llama", tmp_path / "x", U.Plan(layers=[0]))


def test_refusals(qwen3, tmp_path):
    d, _ = qwen3
    cfg, w, _ = U.read_dense(d)
    with pytest.raises(ConfigError, match="multiple"):
        U.to_hf(cfg, w, U.Plan(experts=3, granular=2))
    with pytest.raises(ConfigError, match="shared expert"):
        U.to_hf(cfg, w, U.Plan(experts=3, granular=4, shared=1))
    with pytest.raises(ConfigError, match="every layer"):
        U.to_mobilemoe(cfg, w, U.Plan(layers=[0], format="mobilemoe"))
    w2 = dict(w)
    w2["model.layers.1.self_attn.q_norm.weight"] = w["model.layers.1.self_attn.q_norm.weight"] * 2
    with pytest.raises(ConfigError, match="q_norm has learned weights"):
        U.to_mobilemoe(cfg, w2, U.Plan(format="mobilemoe"))
    assert U.main(["--from", str(d), "--out", str(tmp_path / "o"), "--granular", "3"]) == 1
    # transformers 5 writes rope_parameters instead of rope_theta; a missing field is named.
    c5 = {k: v for k, v in cfg.items() if k != "rope_theta"}
    c5["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    assert U.to_hf(c5, w, U.Plan())[0]["rope_theta"] == 10000.0
    assert U.to_mobilemoe(c5, w, U.Plan(format="mobilemoe")).args.rope_theta == 10000.0
    with pytest.raises(ConfigError, match="rope_theta"):
        U.to_hf({k: v for k, v in cfg.items() if k != "rope_theta"}, w, U.Plan())
    with pytest.raises(ConfigError, match="rms_norm_eps"):
        U.to_mobilemoe({k: v for k, v in cfg.items() if k != "rms_norm_eps"}, w,
                       U.Plan(format="mobilemoe"))


def test_upcycled_folder_loads_in_mlx_lm_and_generates(qwen3, tmp_path):
    import mlx_lm

    d, _ = qwen3
    assert U.main(["--from", str(d), "--out", str(tmp_path / "moe"), "--layers", "0,2",
                   "--experts", "4", "--top-k", "2", "--noise", "0.01"]) == 0
    model, tok = mlx_lm.load(str(tmp_path / "moe"))
    text = mlx_lm.generate(model, tok, "First Citizen:", max_tokens=8)
    assert isinstance(text, str) and len(tok.encode(text)) > 0
    assert "top-2" in (tmp_path / "moe" / "README.md").read_text()
    # The copies differ by the noise: the router has something to learn.
    a = mx.load(str(tmp_path / "moe" / "model.safetensors"))
    e0, e1 = (a[f"model.layers.0.mlp.experts.{e}.up_proj.weight"] for e in (0, 1))
    assert 0 < _max_err(e0, e1)


def test_router_only_training_keeps_frozen_tensors_and_does_not_hurt(qwen3, tmp_path):
    from mlx_mobilemoe import checkpoint
    from mlx_mobilemoe.train import run
    from mlx_mobilemoe.train import make_config

    d, _ = qwen3
    up = tmp_path / "up"
    U.upcycle(d, up, U.Plan(experts=4, top_k=2, noise=0.2, format="mobilemoe"))
    (tmp_path / "text.txt").write_text(CORPUS)
    cfg = make_config(stage="pretrain", model=str(up), data=str(tmp_path / "text.txt"),
                      out=str(tmp_path / "run"), trainable=["router"], steps=6, seq_len=32, compile=False,
                      batch_size=4, lr=1e-2, warmup=1, weight_decay=0.0, eval_batches=2,
                      log_every=100, moe={"dispatch": "dropless", "aux_loss": 0.01,
                                          "balance_gamma": 0.0})
    run(cfg)
    before, _ = read_tensors(up)
    after, _ = read_tensors(tmp_path / "run")
    assert set(before) == set(after)
    changed = [k for k in before if not np.array_equal(np.array(before[k].astype(mx.float32)),
                                                       np.array(after[k].astype(mx.float32)))]
    assert changed and all(k.endswith("router.weight") for k in changed), changed

    tok = checkpoint.load_tokenizer(up)
    ids = mx.array([tok.encode(CORPUS[:2000])[:256]])

    def loss(folder):
        m = checkpoint.load_model(folder)
        logits = m(ids[:, :-1])
        return float(mx.mean(mx.logsumexp(logits, -1) - mx.take_along_axis(
            logits, ids[:, 1:, None], -1)[..., 0]).item())

    assert loss(tmp_path / "run") <= loss(up) + 1e-6


def test_trainable_names_must_exist(tmp_path):
    from mlx_mobilemoe.config import preset
    from mlx_mobilemoe.train.loop import TrainingError, freeze_except

    m = Model(preset("tiny"))
    freeze_except(m, ["router"])
    names = [k for k, _ in tree_flatten(m.trainable_parameters())]
    assert names and all("router" in k for k in names)
    with pytest.raises(TrainingError, match="routr"):
        freeze_except(m, ["routr"])


def test_dense_mobilemoe_is_a_qwen3_checkpoint(tmp_path, tokenizer_dir):
    """The experiment's dense source: trained as a one-expert MobileMoE, written as Qwen3."""
    from mlx_lm.utils import load_model

    from mlx_mobilemoe.config import preset

    m = Model(preset("tiny", num_local_experts=1, num_experts_per_tok=1, intermediate_size=96,
                     intermediate_size_mlp=0, no_rope_layers=[], rope_scaling=None))
    m.update(tree_map_bf16(m.parameters()))
    U.dense_to_qwen3(m, tmp_path / "q", tokenizer_dir)
    q, _ = load_model(tmp_path / "q")
    q.set_dtype(mx.float32)  # bf16 on disk (exact: the weights were rounded), f32 compute
    ref = m(X)
    assert _max_err(q(X), ref) < 1e-5 * float(mx.abs(ref).max())
    back = U.to_mobilemoe(*U.read_dense(tmp_path / "q")[:2], U.Plan(experts=1, top_k=1,
                                                                      format="mobilemoe"))
    assert _max_err(back(X), ref) < 1e-5 * float(mx.abs(ref).max())
    with pytest.raises(ConfigError, match="Qwen3"):
        U.dense_to_qwen3(Model(preset("tiny")), tmp_path / "x")


def tree_map_bf16(params):
    """Round every weight to bf16 (what a checkpoint holds), kept in float32."""
    from mlx.utils import tree_map
    return tree_map(lambda p: p.astype(mx.bfloat16).astype(mx.float32), params)
