"""Fake quantization (int4 weights, int8 activations), STE gradients, PTQ scale search."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_mobilemoe import config, qat, quant
from mlx_mobilemoe.model import Model


def weights(shape, seed=0):
    w = mx.random.normal(shape, key=mx.random.key(seed)) * 0.05
    # awkward groups: all zero, one huge outlier
    w[..., :32] = 0.0
    w[..., 32] = 3.0
    return w


@pytest.mark.parametrize("shape", [(13, 96), (3, 5, 64)])
@pytest.mark.parametrize("scales", ["rtn", "mse"])
def test_fake_quant_is_exactly_the_exported_integers(shape, scales):
    w = weights(shape)
    s = quant.symmetric_scales(w) if scales == "rtn" else quant.mse_scales(w)
    q, s_out = quant.quantize_int4(w, s)
    expect = np.array(quant.dequantize_int4(q, s_out))
    # dynamic (scales=None) and explicit float32 scales (the learned path) alike
    for arg in (None if scales == "rtn" else s.astype(mx.float32), s.astype(mx.float32)):
        got = np.array(quant.fake_quant_int4(w, arg))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expect)
    # and the packed bytes decode to the same integers
    np.testing.assert_array_equal(np.array(quant.unpack_int4(quant.pack_int4(q))), np.array(q))


def test_half_way_values_round_like_the_exporter():
    s = mx.array([[0.25]], dtype=mx.float16)
    w = mx.array([[0.125, 0.375, -0.125, -0.375, 1.875, -2.125] + [0.0] * 26])
    q, _ = quant.quantize_int4(w, s)
    assert q[0, :6].tolist() == [0, 2, 0, -2, 7, -8]  # half to even, then clip
    np.testing.assert_array_equal(np.array(quant.fake_quant_int4(w, s.astype(mx.float32))),
                                  np.array(quant.dequantize_int4(q, s)))


def test_ste_gradient_dynamic_scales_is_identity():
    w = weights((4, 64))
    c = mx.random.normal(w.shape, key=mx.random.key(1))
    g = mx.grad(lambda w: (quant.fake_quant_int4(w) * c).sum())(w)
    np.testing.assert_array_equal(np.array(g), np.array(c))


def test_lsq_gradients_with_learned_scales():
    w = mx.array([[0.1, -0.3, 0.9, -2.0] + [0.05] * 28])
    s = mx.array([[0.1]])
    gw, gs = mx.grad(lambda w, s: quant.fake_quant_int4(w, s).sum(), argnums=(0, 1))(w, s)
    sf = float(mx.array(0.1).astype(mx.float16).astype(mx.float32))
    v = np.array(w[0]) / sf
    inside = (v >= -8) & (v <= 7)
    np.testing.assert_array_equal(np.array(gw[0]), inside.astype(np.float32))  # 0.9 clips at 7
    expect_s = np.where(inside, np.round(v) - v, np.clip(v, -8, 7)).sum()
    assert abs(gs.item() - expect_s) < 1e-4


def test_int8_per_token_activation_fake_quant():
    x = mx.random.normal((3, 7, 48), key=mx.random.key(2)) * mx.array([0.1, 1.0, 10.0])[:, None,
                                                                                       None]
    for sym in (False, True):
        xq = quant.fake_quant_int8_per_token(x, symmetric=sym)
        rng = (mx.maximum(mx.max(x, -1, keepdims=True), 0)
               - mx.minimum(mx.min(x, -1, keepdims=True), 0))
        step = (rng / 255) if not sym else mx.max(mx.abs(x), -1, keepdims=True) / 127
        assert mx.all(mx.abs(xq - x) <= step * 0.5 + 1e-6).item()  # per-token step
        # at most 256 levels per token
        assert max(len(np.unique(np.array(xq[i, j]))) for i in range(3) for j in range(7)) <= 256
        g = mx.grad(lambda x: (quant.fake_quant_int8_per_token(x, sym) * 2).sum())(x)
        assert mx.all(g == 2).item()


def test_mse_scales_never_worse_than_rtn():
    w = mx.random.normal((64, 256), key=mx.random.key(3)) * 0.02
    err = {}
    for name, s in (("rtn", quant.symmetric_scales(w)), ("mse", quant.mse_scales(w))):
        q, s = quant.quantize_int4(w, s)
        e = mx.square(quant.dequantize_int4(q, s) - w).reshape(64, -1, 32).sum(-1)
        err[name] = np.array(e)
    assert (err["mse"] <= err["rtn"]).all()
    assert err["mse"].sum() < 0.9 * err["rtn"].sum()  # gaussian groups: clipping pays


def test_gradients_reach_every_float_weight_through_qat_model():
    mx.random.seed(0)
    m = Model(config.preset("tiny"))
    qat.to_qat(m, scales="learned", act_bits=8)
    x = mx.random.randint(0, 320, (2, 12), key=mx.random.key(4))

    def loss(model):
        return nn.losses.cross_entropy(model(x[:, :-1]), x[:, 1:]).mean()

    grads = dict(tree_flatten(nn.value_and_grad(m, loss)(m)[1]))
    mods = qat.fake_quant_modules(m)
    assert len(mods) == 1 + 2 * (4 + 3 + 2)
    for path in mods:
        for leaf in ("weight", "log_scales"):
            g = grads[f"{path}.{leaf}"]
            assert mx.abs(g).sum().item() > 0, f"no gradient reaches {path}.{leaf}"
    router = grads["model.layers.0.feed_forward.router.weight"]
    assert router.dtype == mx.float32 and mx.abs(router).sum().item() > 0
    assert m.model.layers[0].feed_forward.router.weight.dtype == mx.float32
