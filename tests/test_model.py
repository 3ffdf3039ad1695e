"""The forward pass against the float64 NumPy reference of DESIGN.md §4 (tests/official.py)."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

import kernel_cases
import official
from mlx_mobilemoe.checkpoint import load_model
from mlx_mobilemoe.config import preset
from mlx_mobilemoe.model import MoE, Model, rope_inv_freq

VARIANTS = {
    "tiny": {},
    "scaled-no-renorm": dict(routed_scaling_factor=2.5, norm_topk_prob=False),
    "all-rope-k1": dict(no_rope_layers=[], num_experts_per_tok=1),
    "no-shared-k4": dict(intermediate_size_mlp=0, num_experts_per_tok=4),
    "no-qk-norm": dict(use_qk_norm=False, num_key_value_heads=4),
}


@pytest.mark.parametrize("qat", [True, False], ids=["qat", "bf16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("T", [1, 9, 40])  # 40 tokens * k >= 64 takes the sorted-experts path
def test_logits_match_float64_reference(tmp_path, qat, variant, T):
    cfg = {**official.TINY, **VARIANTS[variant]}
    tensors = official.write_checkpoint(tmp_path, cfg, qat=qat, seed=T)
    cfg = {**cfg, **({"quantization": official.QUANTIZATION} if qat else {})}
    tokens = np.random.default_rng(T).integers(0, cfg["vocab_size"], size=T)
    want = official.reference_logits(cfg, tensors, tokens)
    model = load_model(tmp_path, dtype=mx.float32)
    got = np.array(model(mx.array(tokens)[None]))[0].astype(np.float64)
    assert np.abs(want).max() > 1.0  # logits of order 1-10, so 1e-3 is a real bound
    err = np.abs(got - want).max()
    assert err < 1e-3, f"max abs error {err}"


def test_routing_test_vector():
    v = kernel_cases.ROUTING_VECTOR
    E = len(v["logits"])
    args = preset("tiny", num_local_experts=E, num_experts_per_tok=v["k"],
                  routed_scaling_factor=v["scale"])
    moe = MoE.from_args(args)
    x = mx.zeros((1, args.hidden_size))
    x[0, 0] = 1.0
    w = mx.zeros((E, args.hidden_size))
    w[:, 0] = mx.array(v["logits"], mx.float32)
    moe.router.weight = w
    moe.expert_bias = mx.array(v["bias"], mx.float32)
    idx, wts = moe.route(x)
    order = np.argsort(np.array(idx[0]))
    assert np.array(idx[0])[order].tolist() == v["experts"]
    np.testing.assert_allclose(np.array(wts[0])[order], v["weights"], atol=1e-4)
    assert wts.dtype == mx.float32


def test_llama3_frequency_rule():
    scaling = {"rope_type": "llama3", "factor": 16.0, "original_max_position_embeddings": 8192,
               "low_freq_factor": 1.0, "high_freq_factor": 1.0}
    got = np.array(rope_inv_freq(64, 500000.0, scaling), dtype=np.float64)
    base = 1.0 / 500000.0 ** (np.arange(0, 64, 2) / 64)
    long = 2 * math.pi / base > 8192
    assert np.isfinite(got).all()
    assert 0 < long.sum() < len(base)  # both branches are exercised
    np.testing.assert_allclose(got[long], base[long] / 16, rtol=1e-6)
    np.testing.assert_allclose(got[~long], base[~long], rtol=1e-6)
    # the reference in tests/official.py reads the rule the same way
    np.testing.assert_allclose(got, official.llama3_inv_freq(64, 500000.0, scaling), rtol=1e-6)


@pytest.mark.parametrize("chunks", [[1] * 12, [5, 1, 1, 5], [7, 5]])
def test_kv_cache_matches_full_forward(tiny_qat, chunks):
    folder, _ = tiny_qat
    model = load_model(folder)
    tokens = mx.array(np.random.default_rng(0).integers(0, 320, size=(1, sum(chunks))))
    full = model(tokens)
    cache = model.make_cache()
    outs, start = [], 0
    for n in chunks:
        outs.append(model(tokens[:, start:start + n], cache=cache))
        start += n
    step = mx.concatenate(outs, axis=1)
    assert mx.abs(step - full).max().item() < 1e-4


def test_batched_forward_matches_single(tiny_qat):
    folder, _ = tiny_qat
    model = load_model(folder)
    toks = mx.array(np.random.default_rng(3).integers(0, 320, size=(3, 6)))
    batch = model(toks)
    for b in range(3):
        assert mx.abs(batch[b] - model(toks[b:b + 1])[0]).max().item() < 1e-4


def test_experts_per_token_override(tiny_qat):
    folder, _ = tiny_qat
    model = load_model(folder)
    toks = mx.array([[3, 4, 5, 6]])
    base = model(toks)
    model.set_experts_per_token(4)
    more = model(toks)
    assert mx.abs(more - base).max().item() > 1e-3
    model.set_experts_per_token(None)
    assert mx.abs(model(toks) - base).max().item() == 0
    with pytest.raises(ValueError, match="experts per token"):
        model.set_experts_per_token(9)


def test_mlx_lm_stream_generate_runs(tiny_qat):
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler
    from mlx_mobilemoe import load

    model, tok = load(tiny_qat[0])
    out = list(stream_generate(model, tok, "Speak", max_tokens=6, sampler=make_sampler(0.0)))
    assert len(out) == 6 and out[-1].generation_tokens == 6
    # greedy generation equals argmax over full forwards
    ids = tok.encode("Speak")
    for r in out:
        nxt = int(mx.argmax(model(mx.array([ids]))[0, -1]).item())
        assert r.token == nxt
        ids.append(nxt)


def test_random_init_model_runs():
    model = Model(preset("tiny"))
    assert model(mx.array([[1, 2, 3]])).shape == (1, 3, 320)


def test_preset_depth_override_repeats_the_rope_pattern():
    args = preset("tiny", num_hidden_layers=5)
    assert args.no_rope_layers == [1, 0, 1, 0, 1]
    assert preset("tiny", num_hidden_layers=3, no_rope_layers=[0, 0, 0]).no_rope_layers == [0, 0, 0]
    assert preset("S", num_hidden_layers=2).num_hidden_layers == 2  # S has no pattern


def test_behaviour_is_bit_identical_to_the_record():
    """Refactors keep every bit (issue 12): greedy tokens of the bundled default model, and
    the logits (and training statistics) on the test checkpoints, against tests/behaviour.json.
    Logit hashes are recorded per CPU BLAS; tokens hold on every one."""
    import behaviour

    record = behaviour.recorded()
    now = behaviour.measure()
    mine = record.get(behaviour.blas())
    any_record = next(iter(record.values()))
    assert now["default.greedy"] == any_record["default.greedy"]
    if mine is None:
        pytest.skip(f"no logits record for BLAS {behaviour.blas()} (run tests/behaviour.py)")
    assert now == mine


def test_save_quantized_leaves_the_callers_model_float(tmp_path):
    """save(quantized=True) writes the int4 model of a copy (it used to quantize in place)."""
    from mlx_mobilemoe import checkpoint
    from mlx_mobilemoe.model import copy_model, quantize_model

    mx.random.seed(6)
    model = Model(preset("tiny"))
    x = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    before = model(x)
    checkpoint.save(model, None, tmp_path / "int4", quantized=True)
    assert not model.args.is_quantized and type(model.layers[0].self_attn.q_proj) is nn.Linear
    assert mx.array_equal(model(x), before).item()
    saved = load_model(tmp_path / "int4")
    assert saved.args.is_quantized
    np.testing.assert_allclose(np.array(saved(x)), np.array(quantize_model(copy_model(model))(x)),
                               rtol=1e-5, atol=1e-5)
