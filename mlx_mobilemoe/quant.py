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
