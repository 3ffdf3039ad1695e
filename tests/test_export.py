"""QAT model -> official int4 folder -> load: same integers, same logits; PTQ through the CLI."""

import json

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

from mlx_mobilemoe import checkpoint, config, export, qat, quant
from mlx_mobilemoe.model import Model

# Weights and fp16 scales of the loaded model are bit-identical to the fake-quant ones (the
# test checks the integers), and norms/expert_bias are rounded to their BF16 storage first,
# so logits differ only by float32 summation order (matmul vs quantized_matmul, gather_mm vs
# gather_qmm): measured <= 2.4e-6 on logits of magnitude ~7; 1e-4 leaves room for other BLAS.
LOGIT_ATOL = 1e-4


def trained_qat_model(scales, act_bits, steps=4):
    mx.random.seed(0)
    m = qat.to_qat(Model(config.preset("tiny")), scales=scales, init="mse", act_bits=act_bits)
    x = mx.random.randint(0, 320, (2, 17), key=mx.random.key(1))
    opt = optim.Adam(1e-3)

    def loss(model):
        return nn.losses.cross_entropy(model(x[:, :-1]), x[:, 1:]).mean()

    step = nn.value_and_grad(m, loss)
    for _ in range(steps):
        _, g = step(m)
        opt.update(m, g)
        mx.eval(m.parameters(), opt.state)
    return m


@pytest.mark.parametrize("scales,act_bits", [("dynamic", None), ("learned", 8)])
def test_load_of_export_matches_fake_quant_model(tmp_path, scales, act_bits):
    m = trained_qat_model(scales, act_bits)
    qat.round_to_storage(m)
    x = mx.random.randint(0, 320, (2, 21), key=mx.random.key(2))
    qat.set_act_bits(m, None)  # the file has no activation quantization (see docs)
    ref = m(x)
    qat.set_act_bits(m, act_bits)
    out_dir = export.export(m, None, tmp_path / "int4")

    loaded = checkpoint.load_model(out_dir)
    assert loaded.args.quantization["format"] == "mobilemoe-int4-g32"
    np.testing.assert_allclose(np.array(loaded(x)), np.array(ref), rtol=0, atol=LOGIT_ATOL)
    # its exact float copy (what the quant report scores on CPU) has the fake-quant weights
    deq = qat.dequantize_model(loaded)
    fq_weights = {p: mod.quantized_weight() for p, mod in qat.fake_quant_modules(m).items()}
    for p, mod in deq.named_modules():
        if p in fq_weights:
            assert mx.array_equal(mod.weight, fq_weights[p]).item(), p
    np.testing.assert_allclose(np.array(deq(x)), np.array(ref), rtol=0, atol=LOGIT_ATOL)

    # the packed bytes decode to exactly the integers the fake-quant forward pass used
    tensors, headers = checkpoint.read_tensors(out_dir)
    for path, mod in qat.fake_quant_modules(m).items():
        if path.endswith(("experts.gate_up", "experts.down")):
            head, proj = path.rsplit(".", 1)
            qw, sc = tensors[f"{head}.{proj}_qweight"], tensors[f"{head}.{proj}_scale"]
        else:
            qw, sc = tensors[f"{path}.qweight"], tensors[f"{path}.weight_scale"]
        assert sc.dtype == mx.float16
        np.testing.assert_array_equal(np.array(sc), np.array(mod.export_scales()))
        s = sc.astype(mx.float32)
        w_fq = mod.quantized_weight()
        q_fq = (w_fq.reshape(*s.shape, 32) / s[..., None]).reshape(w_fq.shape)
        assert mx.all(q_fq == mx.round(q_fq)).item()
        np.testing.assert_array_equal(np.array(quant.unpack_int4(qw)), np.array(q_fq))
    for n in range(m.args.num_hidden_layers):
        assert headers[f"model.layers.{n}.feed_forward.router.weight"][0] == "F32"
    assert tensors["model.layers.0.feed_forward.router.weight"].dtype == mx.float32


def test_int8_activation_gap_is_small():
    # what the exported model (float activations) gives up against the act8 training form:
    # per-token logit cosine ~0.9999, lower where the int8 error flips a routing choice
    m = trained_qat_model("dynamic", 8, steps=1)
    x = mx.random.randint(0, 320, (1, 16), key=mx.random.key(3))
    with_act = m(x)
    qat.set_act_bits(m, None)
    without = m(x)
    cos = (with_act * without).sum(-1) / (mx.linalg.norm(with_act, axis=-1)
                                          * mx.linalg.norm(without, axis=-1))
    assert mx.mean(cos).item() > 0.999 and mx.min(cos).item() > 0.98


def test_qat_state_round_trip_and_cli_export(tmp_path, capsys):
    m = trained_qat_model("learned", None, steps=2)
    qat.save_qat(m, None, tmp_path / "state")
    again = qat.load_qat(tmp_path / "state")
    x = mx.random.randint(0, 320, (1, 9), key=mx.random.key(4))
    np.testing.assert_array_equal(np.array(again(x)), np.array(m(x)))
    assert export.main([str(tmp_path / "state"), str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "qat"
    a = checkpoint.read_tensors(tmp_path / "out")[0]
    b = checkpoint.read_tensors(export.export(m, None, tmp_path / "direct"))[0]
    assert a.keys() == b.keys()
    for k in a:
        assert mx.array_equal(a[k], b[k]).item(), k


def test_ptq_cli_rtn_and_mse(tmp_path, capsys):
    mx.random.seed(5)
    float_model = Model(config.preset("tiny"))
    checkpoint.save(float_model, None, tmp_path / "float", quantized=False)
    src = checkpoint.load_model(tmp_path / "float")  # bf16-rounded weights, as stored
    x = mx.random.randint(0, 320, (1, 20), key=mx.random.key(6))
    ref = src(x)
    err = {}
    for method in ("rtn", "mse"):
        assert export.main([str(tmp_path / "float"), str(tmp_path / method),
                            "--method", method]) == 0
        assert json.loads(capsys.readouterr().out)["method"] == method
        q = checkpoint.load_model(tmp_path / method)
        assert q.args.is_quantized and q(x).shape == ref.shape
        # weight reconstruction error over every int4 tensor (the logits of a random model
        # are too noisy to rank the two methods)
        err[method] = sum(mx.square(_dequant(q, p) - w).sum().item()
                          for p, w in _float_weights(src).items())
    assert err["mse"] < 0.9 * err["rtn"]
    # RTN through the exporter is the lead's quantize_model, byte for byte
    rtn = checkpoint.read_tensors(tmp_path / "rtn")[0]
    ref_dir = checkpoint.save(checkpoint.load_model(tmp_path / "float"), None,
                              tmp_path / "save_rtn", quantized=True)
    for k, v in checkpoint.read_tensors(ref_dir)[0].items():
        assert mx.array_equal(rtn[k], v).item(), k
    # an int4 source is refused
    assert export.main([str(tmp_path / "rtn"), str(tmp_path / "again")]) == 1


def _float_weights(model):
    return {p: mod.weight for p, mod in model.named_modules()
            if isinstance(mod, (nn.Linear, nn.Embedding)) and not p.endswith("router")
            or p.endswith(("experts.gate_up", "experts.down"))}


def _dequant(model, path):
    mod = dict(model.named_modules())[path]
    return mx.dequantize(mod.weight, mod.scales, mod.biases, group_size=32, bits=4)
