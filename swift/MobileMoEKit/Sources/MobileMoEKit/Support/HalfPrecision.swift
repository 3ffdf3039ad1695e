// Float16 / BFloat16 bit patterns to Float. Swift's `Float16` type is unavailable on Intel
// macOS, so the conversions work on the raw UInt16 bits (IEEE 754 binary16 / bfloat16).

@inline(__always)
public func bfloat16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// Exact binary16 -> binary32 conversion (normals, subnormals, inf, NaN).
@inline(__always)
public func float16ToFloat(_ bits: UInt16) -> Float {
    let sign = UInt32(bits & 0x8000) << 16
    let exponent = UInt32(bits >> 10) & 0x1F
    let mantissa = UInt32(bits & 0x3FF)
    if exponent == 0x1F {  // inf / NaN
        return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
    }
    if exponent == 0 {
        // zero or subnormal: mantissa * 2^-24
        let magnitude = Float(mantissa) * (1.0 / 16_777_216.0)
        return sign == 0 ? magnitude : -magnitude
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

/// Float -> binary16 bits, round to nearest even (used by tests and fixture writers).
public func floatToFloat16Bits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    let exponent = Int((bits >> 23) & 0xFF)
    var mantissa = bits & 0x7F_FFFF
    if exponent == 0xFF { return sign | 0x7C00 | (mantissa != 0 ? 0x200 : 0) }
    let e = exponent - 127 + 15
    if e >= 0x1F { return sign | 0x7C00 }
    if e <= 0 {
        if e < -10 { return sign }
        mantissa |= 0x80_0000
        let shift = UInt32(14 - e)
        var half = mantissa >> shift
        let rem = mantissa & ((1 << shift) - 1)
        let halfway = UInt32(1) << (shift - 1)
        if rem > halfway || (rem == halfway && (half & 1) == 1) { half += 1 }
        return sign | UInt16(half)
    }
    var half = UInt32(e) << 10 | (mantissa >> 13)
    let rem = mantissa & 0x1FFF
    if rem > 0x1000 || (rem == 0x1000 && (half & 1) == 1) { half += 1 }
    return sign | UInt16(half)
}
