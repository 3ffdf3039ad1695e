// GENERATED from mlx_mobilemoe/kernels/table.py (python -m mlx_mobilemoe.kernels); do
// not edit. The launch table of the Metal entry points (Kernels/moe_kernels.metal):
// buffer order and threadgroups per launch, the same table the Python launcher uses.
// `d` holds the bodies' MM_* #defines (KernelGeometry parses them from the headers).

struct KernelTableEntry: Sendable {
    let inputs: [String]
    let outputs: [String]
    /// Entry point has _f32 / _f16 variants (templated on the activation dtype).
    let typed: Bool
    /// Threadgroups of MM_NT threads for (T, H, I, S, E, K, defines).
    let groups: @Sendable (Int, Int, Int, Int, Int, Int, [String: Int]) -> Int
}

enum KernelTable {
    static func cdiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }

    static let decode = ["moe_gate_up_decode", "moe_down_decode"]
    static let prefill = ["moe_route", "moe_gate_up_prefill", "moe_down_prefill", "moe_combine"]

    static let entries: [String: KernelTableEntry] = [
        "moe_gate_up_decode": KernelTableEntry(
            inputs: ["x", "rw", "eb", "gu_w", "gu_s", "sg_w", "sg_s", "su_w", "su_s", "dims", "fp"],
            outputs: ["h", "hs", "sel", "selw"],
            typed: true,
            groups: { T, H, I, S, E, K, d in T * (KernelTable.cdiv(K * (I / 8), d["MM_PT"]!) + KernelTable.cdiv(S, d["MM_RPB"]!)) }),
        "moe_down_decode": KernelTableEntry(
            inputs: ["h", "hs", "sel", "selw", "dn_w", "dn_s", "sd_w", "sd_s", "dims"],
            outputs: ["y"],
            typed: true,
            groups: { T, H, I, S, E, K, d in T * KernelTable.cdiv(H / 8, d["MM_CT"]!) }),
        "moe_route": KernelTableEntry(
            inputs: ["x", "rw", "eb", "dims", "fp"],
            outputs: ["sel", "selw"],
            typed: true,
            groups: { T, H, I, S, E, K, d in KernelTable.cdiv(T, d["MM_NW"]!) }),
        "moe_gate_up_prefill": KernelTableEntry(
            inputs: ["x", "sel", "gu_w", "gu_s", "sg_w", "sg_s", "su_w", "su_s", "dims"],
            outputs: ["h", "hs"],
            typed: true,
            groups: { T, H, I, S, E, K, d in E * KernelTable.cdiv(I, d["MM_BH"]!) + KernelTable.cdiv(T, d["MM_BM"]!) * KernelTable.cdiv(S, d["MM_BH"]!) }),
        "moe_down_prefill": KernelTableEntry(
            inputs: ["h", "hs", "sel", "selw", "dn_w", "dn_s", "sd_w", "sd_s", "dims"],
            outputs: ["ys", "ysh"],
            typed: false,
            groups: { T, H, I, S, E, K, d in (E + KernelTable.cdiv(T, d["MM_BM"]!) * min(S, 1)) * KernelTable.cdiv(H, 2 * d["MM_BH"]!) }),
        "moe_combine": KernelTableEntry(
            inputs: ["ys", "ysh", "dims"],
            outputs: ["y"],
            typed: true,
            groups: { T, H, I, S, E, K, d in KernelTable.cdiv(T * H, d["MM_NT"]!) }),
    ]
}
