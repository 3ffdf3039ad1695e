"""INT4 symmetric group-32 quantization: the official packed format and MLX's affine one.

Official: q in [-8, 7], two q per byte along the last axis (even index in the low nibble,
two's complement), w = q * scale[..., j // 32] with float16 scales.
MLX affine 4-bit: nibbles hold u = q + 8, eight per little-endian uint32, w = u * s + b.
Since u = q + 8 is the two's-complement nibble XOR 8, `official_bytes ^ 0x88` viewed as uint32
with s = scale and b = -8 * scale is exactly MLX's layout: the conversion is lossless both ways.
"""

from __future__ import annotations

import mlx.core as mx

GROUP_SIZE = 32
BITS = 4
QMIN, QMAX = -8, 7


def official_to_mlx(qweight: mx.array, scale: mx.array):
    """(uint8 [..., n/2], fp16 [..., n/32]) -> MLX affine (uint32 [..., n/8], scales, biases)."""
    if qweight.dtype != mx.uint8:
        raise ValueError(f"packed int4 weight must be uint8, got {qweight.dtype}")
    if qweight.shape[-1] % 4:
        raise ValueError(f"packed int4 row of {qweight.shape[-1]} bytes is not a multiple of 4")
    w = mx.bitwise_xor(qweight, mx.array(0x88, dtype=mx.uint8)).view(mx.uint32)
    return w, scale, -8 * scale


def mlx_to_official(weight: mx.array, scales: mx.array):
    """MLX affine (uint32, scales) -> official (uint8 packed two's complement, scales)."""
    packed = mx.bitwise_xor(weight.view(mx.uint8), mx.array(0x88, dtype=mx.uint8))
    return packed, scales


def pack_int4(q: mx.array) -> mx.array:
    """int q in [-8, 7], [..., n] -> uint8 [..., n/2] (official nibble order)."""
    u = (q.astype(mx.int32) & 0xF).astype(mx.uint8)
    u = u.reshape(*u.shape[:-1], -1, 2)
    return u[..., 0] | (u[..., 1] << 4)


def unpack_int4(packed: mx.array) -> mx.array:
    """uint8 [..., n/2] -> int8 [..., n] in [-8, 7]."""
    lo = (packed & 0xF).astype(mx.int8)
    hi = (packed >> 4).astype(mx.int8)
    q = mx.stack([lo, hi], axis=-1).reshape(*packed.shape[:-1], -1)
    return mx.where(q > 7, q - 16, q)


def symmetric_scales(w: mx.array, group_size: int = GROUP_SIZE) -> mx.array:
    """Round-to-nearest scale per group along the last axis: absmax / 7, in float16."""
    g = w.astype(mx.float32).reshape(*w.shape[:-1], -1, group_size)
    s = mx.max(mx.abs(g), axis=-1) / QMAX
    s = s.astype(mx.float16).astype(mx.float32)  # the scale actually stored
    return mx.where(s == 0, 1.0, s).astype(mx.float16)


def quantize_int4(w: mx.array, scales: mx.array | None = None, group_size: int = GROUP_SIZE):
    """Float weight [..., n] -> (int8 q [..., n], float16 scales [..., n/group])."""
    if w.shape[-1] % group_size:
        raise ValueError(f"last axis {w.shape[-1]} is not a multiple of group size {group_size}")
    if scales is None:
        scales = symmetric_scales(w, group_size)
    g = w.astype(mx.float32).reshape(*w.shape[:-1], -1, group_size)
    q = mx.clip(mx.round(g / scales.astype(mx.float32)[..., None]), QMIN, QMAX)
    return q.reshape(w.shape).astype(mx.int8), scales


def dequantize_int4(q: mx.array, scales: mx.array, group_size: int = GROUP_SIZE) -> mx.array:
    g = q.astype(mx.float32).reshape(*q.shape[:-1], -1, group_size)
    return (g * scales.astype(mx.float32)[..., None]).reshape(q.shape)


def int4_to_mlx(q: mx.array, scales: mx.array):
    """int q [..., n] + fp16 scales -> MLX affine (uint32 weight, scales, biases)."""
    return official_to_mlx(pack_int4(q), scales)


def mlx_to_int4(weight: mx.array) -> mx.array:
    """MLX affine uint32 weight -> int8 q [..., n] (the integers the format stores)."""
    return unpack_int4(mlx_to_official(weight, None)[0])


# --- post-training scale search ---------------------------------------------------------

# Clip ratios tried by `mse_scales`: 1.0 (round-to-nearest) first, down to 0.5 in steps of
# 1/40 (0.875 = 7/8 lets a negative absmax land exactly on -8).
MSE_RATIOS = tuple(1.0 - k / 40 for k in range(21))


def mse_scales(w: mx.array, group_size: int = GROUP_SIZE, ratios=MSE_RATIOS) -> mx.array:
    """Per-group scale minimising the weight MSE over clip ratios r: s = fp16(r * absmax / 7).

    Ties keep the earlier ratio, so the result is never worse than `symmetric_scales`."""
    if w.shape[-1] % group_size:
        raise ValueError(f"last axis {w.shape[-1]} is not a multiple of group size {group_size}")
    g = w.astype(mx.float32).reshape(*w.shape[:-1], -1, group_size)
    amax = mx.max(mx.abs(g), axis=-1)
    best_s = best_err = None
    for r in ratios:  # one candidate at a time: memory stays a few times the weight
        s = (amax * r / QMAX).astype(mx.float16).astype(mx.float32)
        s = mx.where(s == 0, 1.0, s)
        q = mx.clip(mx.round(g / s[..., None]), QMIN, QMAX)
        err = mx.sum(mx.square(q * s[..., None] - g), axis=-1)
        if best_s is None:
            best_s, best_err = s, err
        else:
            better = err < best_err
            best_s, best_err = mx.where(better, s, best_s), mx.where(better, err, best_err)
        mx.eval(best_s, best_err)
    return best_s.astype(mx.float16)


# --- quantization-aware training: fake quantization with straight-through gradients -----

def fp16_ste(s: mx.array) -> mx.array:
    """float32 scales -> the float16 value the file will store (as float32); gradient 1."""
    return mx.stop_gradient(s.astype(mx.float16).astype(mx.float32)) + _zero_with_unit_grad(s)


def fake_quant_int4(w: mx.array, scales: mx.array | None = None,
                    group_size: int = GROUP_SIZE) -> mx.array:
    """Symmetric int4 g32 fake quantization along the last axis, float32 out.

    The forward value is bit-for-bit `dequantize_int4(*quantize_int4(w, scales))`: the same
    fp16 scales, the same division, round-half-even and clip to [-8, 7].
    scales None: absmax / 7 recomputed from `w` (round-to-nearest) with a plain
    straight-through gradient d/dw = 1. scales given (float32, [..., n/group], trainable):
    rounded to fp16 with an STE, and LSQ gradients: d/dw = 1 inside [-8, 7] and 0 where
    clipped; d/ds = round(w/s) - w/s inside, -8 or 7 where clipped."""
    if w.shape[-1] % group_size:
        raise ValueError(f"last axis {w.shape[-1]} is not a multiple of group size {group_size}")
    g = w.astype(mx.float32).reshape(*w.shape[:-1], -1, group_size)
    if scales is None:
        s = mx.stop_gradient(symmetric_scales(w, group_size).astype(mx.float32))[..., None]
        q = mx.clip(mx.round(g / s), QMIN, QMAX)
        wq = mx.stop_gradient(q * s) + _zero_with_unit_grad(g)
    else:
        s = fp16_ste(scales.astype(mx.float32))[..., None]
        v = mx.clip(g / s, QMIN, QMAX)
        wq = (mx.stop_gradient(mx.round(v)) + _zero_with_unit_grad(v)) * s
    return wq.reshape(w.shape)


def fake_quant_int8_per_token(x: mx.array, symmetric: bool = False) -> mx.array:
    """Dynamic per-token INT8 fake quantization of activations along the last axis, STE.

    Asymmetric (default) follows torchao's 8da4w (ExecuTorch's XNNPACK int8 dynamic
    activations): range [min(x, 0), max(x, 0)] onto [-128, 127] with an integer zero point.
    Symmetric: absmax / 127 onto [-127, 127]."""
    x32 = x.astype(mx.float32)
    eps = 1.1920929e-07  # float32 epsilon, torchao's floor for the scale
    if symmetric:
        s = mx.maximum(mx.max(mx.abs(x32), axis=-1, keepdims=True) / 127, eps)
        xq = mx.clip(mx.round(x32 / s), -127, 127) * s
    else:
        lo = mx.minimum(mx.min(x32, axis=-1, keepdims=True), 0)
        hi = mx.maximum(mx.max(x32, axis=-1, keepdims=True), 0)
        s = mx.maximum((hi - lo) / 255, eps)
        zp = mx.clip(mx.round(-128 - lo / s), -128, 127)
        xq = (mx.clip(mx.round(x32 / s) + zp, -128, 127) - zp) * s
    return mx.stop_gradient(xq.astype(x.dtype)) + _zero_with_unit_grad(x)


def _zero_with_unit_grad(x: mx.array) -> mx.array:
    # Exactly 0 in the forward pass with d/dx = 1, so `stop_gradient(y) + this` equals y
    # bit for bit (the `x + stop_gradient(y - x)` form can round).
    return x - mx.stop_gradient(x)
