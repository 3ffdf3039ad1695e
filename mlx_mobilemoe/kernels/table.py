"""One declarative table per kernel: buffers (in argument order), threadgroup arrays, template
parameters, the body it calls and its grid. From it come
- the glue the Python launcher hands to `mx.fast.metal_kernel` / `cuda_kernel` (`glue`),
  the input/output order and the output shapes (kernels/moe.py);
- the Swift package's Metal entry points, kernels/moe_kernels.metal (repository root) (`metal_source`);
- the Swift launch table, swift/.../Model/GPU/KernelTable.swift (`swift_source`).
The two files are generated and drift-tested (tests/test_kernels.py); regenerate with

    python -m mlx_mobilemoe.kernels        # then swift/sync-kernels.sh

Sizes and grids are expressions over T (tokens), H, I, S (0: no shared expert), E, K and
the bodies' MM_* #defines, in a syntax Python, Swift and C++ read alike: integers, names,
+ and *, `/` (exact integer division), `cdiv(a, b)` (ceil) and `min(a, b)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# Buffer element types: T = activation dtype, ST = scale dtype (template parameters).
_METAL_TYPES = {"T": "T", "ST": "half", "float": "float", "int": "int", "uint32_t": "uint32_t"}
_SWIFT_OFFICIAL = {"ST": "half", "OFFICIAL": "true"}  # the Swift package: official layout


@dataclass(frozen=True)
class Buffer:
    name: str
    type: str  # a key of _METAL_TYPES
    shape: tuple = ()  # outputs only: expressions; a zero-size output is an 8-element placeholder


@dataclass(frozen=True)
class Shared:
    """A threadgroup array the entry point declares and passes to the body."""

    type: str
    name: str
    size: str  # a C expression of MM_* names
    aligned: bool = False


@dataclass(frozen=True)
class Kernel:
    name: str  # entry point: moe_<name>; MLX kernel: mobilemoe_<name>
    body: str  # the body function in the headers
    headers: tuple
    inputs: tuple
    outputs: tuple
    shared: tuple
    template: tuple  # of "T", "ST", "OFFICIAL": the body's template parameters, in order
    ids: tuple  # thread ids the body takes, of mm_tid, mm_gid, mm_lane, mm_warp
    groups: str  # threadgroups of MM_NT threads

    @property
    def entry(self) -> str:
        return f"moe_{self.name}"


_DEC, _PRE = ("moe_common.h", "moe_decode.h"), ("moe_common.h", "moe_prefill.h")
_IDS = ("mm_tid", "mm_gid", "mm_lane", "mm_warp")
_X, _RW, _EB = Buffer("x", "T"), Buffer("rw", "float"), Buffer("eb", "float")
_DIMS, _FP = Buffer("dims", "int"), Buffer("fp", "float")
_GU = (Buffer("gu_w", "uint32_t"), Buffer("gu_s", "ST"))
_SGU = (Buffer("sg_w", "uint32_t"), Buffer("sg_s", "ST"), Buffer("su_w", "uint32_t"),
        Buffer("su_s", "ST"))
_DN = (Buffer("dn_w", "uint32_t"), Buffer("dn_s", "ST"), Buffer("sd_w", "uint32_t"),
       Buffer("sd_s", "ST"))
_H, _HS = Buffer("h", "float", ("T * K", "I")), Buffer("hs", "float", ("T", "S"))
_SEL, _SELW = Buffer("sel", "int", ("T * K",)), Buffer("selw", "float", ("T * K",))
_TILES = (Shared("float", "mm_as", "MM_AS_SIZE", True), Shared("float", "mm_bs", "MM_BS_SIZE", True),
          Shared("int", "mm_list", "MM_LIST_SIZE"), Shared("int", "mm_tmp", "MM_NW + 1"))

KERNELS = {k.name: k for k in (
    Kernel("gate_up_decode", "mm_moe_gate_up_decode", _DEC,
           (_X, _RW, _EB, *_GU, *_SGU, _DIMS, _FP), (_H, _HS, _SEL, _SELW),
           (Shared("float", "mm_xs", "MM_MAX_H"), Shared("float", "mm_red", "MM_DEC_RED"),
            Shared("float", "mm_scores", "MM_MAX_E"), Shared("int", "mm_ch", "MM_MAX_K")),
           ("T", "ST", "OFFICIAL"), _IDS, "T * (cdiv(K * (I / 8), MM_PT) + cdiv(S, MM_RPB))"),
    Kernel("down_decode", "mm_moe_down_decode", _DEC,
           (Buffer("h", "float"), Buffer("hs", "float"), Buffer("sel", "int"),
            Buffer("selw", "float"), *_DN, _DIMS), (Buffer("y", "T", ("T", "H")),),
           (Shared("float", "mm_red", "MM_DEC_RED"), Shared("float", "mm_sh", "MM_CT * 8"),
            Shared("int", "mm_ch", "MM_MAX_K"), Shared("float", "mm_chw", "MM_MAX_K")),
           ("T", "ST", "OFFICIAL"), _IDS, "T * cdiv(H / 8, MM_CT)"),
    Kernel("route", "mm_moe_route", _PRE, (_X, _RW, _EB, _DIMS, _FP), (_SEL, _SELW),
           (Shared("float", "mm_scores", "MM_NW * MM_MAX_E"),), ("T",), _IDS[1:],
           "cdiv(T, MM_NW)"),
    Kernel("gate_up_prefill", "mm_moe_gate_up_prefill", _PRE,
           (_X, Buffer("sel", "int"), *_GU, *_SGU, _DIMS), (_H, _HS), _TILES,
           ("T", "ST", "OFFICIAL"), _IDS, "E * cdiv(I, MM_BH) + cdiv(T, MM_BM) * cdiv(S, MM_BH)"),
    Kernel("down_prefill", "mm_moe_down_prefill", _PRE,
           (Buffer("h", "float"), Buffer("hs", "float"), Buffer("sel", "int"),
            Buffer("selw", "float"), *_DN, _DIMS),
           (Buffer("ys", "float", ("T * K", "H")), Buffer("ysh", "float", ("T", "H * min(S, 1)"))),
           _TILES, ("ST", "OFFICIAL"), _IDS,
           "(E + cdiv(T, MM_BM) * min(S, 1)) * cdiv(H, 2 * MM_BH)"),
    Kernel("combine", "mm_moe_combine", _PRE,
           (Buffer("ys", "float"), Buffer("ysh", "float"), _DIMS), (Buffer("y", "T", ("T", "H")),),
           (), ("T",), _IDS[:2], "cdiv(T * H, MM_NT)"),
)}

DECODE = ("gate_up_decode", "down_decode")
PREFILL = ("route", "gate_up_prefill", "down_prefill", "combine")


# --- evaluation (Python) ------------------------------------------------------------------

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@lru_cache(maxsize=None)
def _compiled(expr: str):
    return compile(expr.replace("/", "//"), expr, "eval")


def evaluate(expr: str, sizes: dict, defines: dict) -> int:
    """An expression of the table for sizes {T, H, I, S, E, K} and the bodies' #defines."""
    return int(eval(_compiled(expr), {"__builtins__": {}, "cdiv": _cdiv, "min": min},
                    {**defines, **sizes}))


def output_shape(buf: Buffer, sizes: dict, defines: dict) -> tuple:
    shape = tuple(evaluate(e, sizes, defines) for e in buf.shape)
    return shape if all(shape) else (8,)


# --- generated sources --------------------------------------------------------------------

def _call(k: Kernel, template: dict, ids: dict) -> str:
    args = [b.name for b in k.inputs + k.outputs] + [s.name for s in k.shared] + \
        [ids[i] for i in k.ids]
    tpl = ", ".join(template.get(t, t) for t in k.template)
    return f"{k.body}<{tpl}>({', '.join(args)});"


def glue(k: Kernel) -> str:
    """The MLX kernel's source after the backend prologue: threadgroup arrays and the call."""
    lines = [f"MM_SHARED_DECL {'MM_ALIGNED ' if s.aligned else ''}{s.type} {s.name}[{s.size}];"
             for s in k.shared]
    return "\n" + "\n".join(lines + [_call(k, {}, {i: i for i in _IDS})]) + "\n"


_METAL_HEAD = """\
// moe_kernels.metal — Metal entry points of the fused MoE FFN, for the Swift package.
// GENERATED from mlx_mobilemoe/kernels/table.py (python -m mlx_mobilemoe.kernels); do
// not edit. tests/test_kernels.py checks it is current and compiles it as C++ over stubs.
//
// Same bodies as the Python build (moe_decode.h, moe_prefill.h), reading the OFFICIAL
// MobileMoE packed layout straight from the mmapped safetensors (OFFICIAL = true: two's
// complement nibbles, value = nibble * fp16 scale, 4.5 bits per weight).
//
// Runtime compilation: MTLDevice.makeLibrary(source:) resolves no local #include, so pass the
// concatenation mm_metal.h + moe_common.h + moe_decode.h + moe_prefill.h + this file with the
// `#include "..."` lines removed. Kernel names: <entry>_f32 / <entry>_f16 (activation dtype),
// except entry points without a T parameter (no suffix).
//
// Every kernel: threadgroup = MM_NT (256) x 1 x 1 threads; dispatchThreadgroups(groups, 256)
// with `groups` as listed (dispatchThreads(groups * 256) is the same). Buffers in argument
// order, index = position. Sizes use T tokens, H hidden, I routed width, S shared width (0:
// none), E experts, K experts per token; cdiv = ceil division. Weights are the checkpoint
// tensors (uint8 bytes bound as uint32 words; every row length is a multiple of 4 bytes):
//   gu_w / gu_s  experts.gate_up_qweight [E, H, 2I/2] / gate_up_scale [E, H, 2I/32]
//   dn_w / dn_s  experts.down_qweight [E, I, H/2] / down_scale [E, I, H/32]
//   sg_*, su_*   shared_expert.gate_proj / up_proj qweight [S, H/2], weight_scale [S, H/32]
//   sd_*         shared_expert.down_proj qweight [H, S/2], weight_scale [H, S/32]
//   rw           router.weight [E, H] float32;  eb  expert_bias [E] as float32 (the file has BF16)
// Without a shared expert set dims[3] = 0 and bind any buffer to the shared slots.
// dims: int32[16] = {T, H, I, S, E, K, norm_topk_prob, 0...};  fp: float32[8] = {routed_scaling_factor, 0...}
// Limits: E <= 256, K <= 8, K <= E, H <= 2048; H, I, S multiples of 32.
//
// Decode (T <= 8) is two launches, prefill four:
"""


def _metal_entry(k: Kernel) -> str:
    params = [f"const device {_METAL_TYPES[b.type]}* {b.name}" for b in k.inputs]
    params += [f"device {_METAL_TYPES[b.type]}* {b.name}" for b in k.outputs]
    params = [f"{p} [[buffer({i})]]" for i, p in enumerate(params)] + ["MM_IDS"]
    head = "template <typename T>\n" if "T" in k.template else ""
    body = [f"  threadgroup {s.type} {s.name}[{s.size}];" for s in k.shared]
    ids = {"mm_tid": "mm_tid3.x", "mm_gid": "mm_gid3.x", "mm_lane": "mm_lane",
           "mm_warp": "mm_warp"}
    body.append("  " + _call(k, _SWIFT_OFFICIAL, ids))
    return (f"{head}[[kernel]] void {k.entry}(\n    " + ",\n    ".join(params) + ") {\n"
            + "\n".join(body) + "\n}\n")


def metal_source() -> str:
    """kernels/moe_kernels.metal."""
    out = [_METAL_HEAD]
    for k in KERNELS.values():
        ins = " ".join(b.name for b in k.inputs)
        outs = ", ".join(f"{b.name}[{', '.join(b.shape)}]" for b in k.outputs)
        out.append(f"//   {k.entry}: {ins}\n//       -> {outs}\n//       groups = {k.groups}\n")
    out.append("// Threadgroup memory is declared inside each kernel (at most ~25 KB).\n")
    out.append('#include "mm_metal.h"\n#include "moe_common.h"\n#include "moe_decode.h"\n'
               '#include "moe_prefill.h"\n\n')
    out.append("#define MM_IDS                                                                  "
               "       \\\n  uint3 mm_tid3 [[thread_position_in_threadgroup]], uint3 mm_gid3 "
               "[[threadgroup_position_in_grid]], \\\n      uint mm_lane [[thread_index_in_simdgroup]]"
               ", uint mm_warp [[simdgroup_index_in_threadgroup]]\n\n")
    out.append("\n".join(_metal_entry(k) for k in KERNELS.values()))
    out.append("\n#define MM_INSTANTIATE(entry, suffix, type) \\\n"
               "  template [[host_name(#entry \"_\" #suffix)]] [[kernel]] decltype(entry<type>) "
               "entry<type>;\n\n")
    for k in KERNELS.values():
        if "T" in k.template:
            out.append(f"MM_INSTANTIATE({k.entry}, f32, float)\n"
                       f"MM_INSTANTIATE({k.entry}, f16, half)\n")
    return "".join(out)


def _swift_expr(expr: str) -> str:
    expr = re.sub(r"\bMM_\w+\b", lambda m: f'd["{m[0]}"]!', expr)
    return re.sub(r"\bcdiv\(", "KernelTable.cdiv(", expr)


def swift_source() -> str:
    """swift/MobileMoEKit/Sources/MobileMoEKit/Model/GPU/KernelTable.swift."""
    rows = []
    for k in KERNELS.values():
        ins = ", ".join(f'"{b.name}"' for b in k.inputs)
        outs = ", ".join(f'"{b.name}"' for b in k.outputs)
        rows.append(
            f'        "{k.entry}": KernelTableEntry(\n'
            f"            inputs: [{ins}],\n            outputs: [{outs}],\n"
            f'            typed: {"true" if "T" in k.template else "false"},\n'
            "            groups: { T, H, I, S, E, K, d in "
            f"{_swift_expr(k.groups)} }}),\n")
    return (
        "// GENERATED from mlx_mobilemoe/kernels/table.py (python -m mlx_mobilemoe.kernels); do\n"
        "// not edit. The launch table of the Metal entry points (Kernels/moe_kernels.metal):\n"
        "// buffer order and threadgroups per launch, the same table the Python launcher uses.\n"
        "// `d` holds the bodies' MM_* #defines (KernelGeometry parses them from the headers).\n\n"
        "struct KernelTableEntry: Sendable {\n    let inputs: [String]\n    let outputs: [String]\n"
        "    /// Entry point has _f32 / _f16 variants (templated on the activation dtype).\n"
        "    let typed: Bool\n"
        "    /// Threadgroups of MM_NT threads for (T, H, I, S, E, K, defines).\n"
        "    let groups: @Sendable (Int, Int, Int, Int, Int, Int, [String: Int]) -> Int\n}\n\n"
        "enum KernelTable {\n"
        "    static func cdiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }\n\n"
        f"    static let decode = [{', '.join(repr(KERNELS[n].entry).replace(chr(39), chr(34)) for n in DECODE)}]\n"
        f"    static let prefill = [{', '.join(repr(KERNELS[n].entry).replace(chr(39), chr(34)) for n in PREFILL)}]\n\n"
        "    static let entries: [String: KernelTableEntry] = [\n" + "".join(rows) + "    ]\n}\n")


def generated_files() -> dict:
    """{path in the repository: its generated text}."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    return {root / "kernels" / "moe_kernels.metal": metal_source(),
            root / "swift/MobileMoEKit/Sources/MobileMoEKit/Model/GPU/KernelTable.swift":
                swift_source()}


def write_generated() -> None:
    for path, text in generated_files().items():
        path.write_text(text)
        print(f"wrote {path}")
