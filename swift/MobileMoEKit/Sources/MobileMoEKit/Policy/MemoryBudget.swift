// Memory before loading: an estimate of weights + KV cache + scratch, checked against what the
// device allows, so too much memory is a clear error instead of the app being killed.
// The budget source is injectable; `SystemMemoryBudget` reads os_proc_available_memory() on
// iOS-family systems (the headroom before jetsam), the physical memory elsewhere on Apple
// platforms, /proc/meminfo's MemAvailable on Linux. The Metal backend also checks its share
// against the GPU's recommendedMaxWorkingSetSize.
import Foundation
#if canImport(Darwin)
import Darwin
#endif

public struct MemoryEstimate: Sendable, Equatable, CustomStringConvertible {
    /// Checkpoint tensors as the backend reads them (memory-mapped: resident as they are touched).
    public var weightsBytes: Int
    /// KV cache for `contextTokens` positions.
    public var kvCacheBytes: Int
    public var scratchBytes: Int
    public var contextTokens: Int

    public var totalBytes: Int { weightsBytes + kvCacheBytes + scratchBytes }

    public var description: String {
        "\(mib(totalBytes)) (weights \(mib(weightsBytes)), KV cache \(mib(kvCacheBytes)) for \(contextTokens) tokens, scratch \(mib(scratchBytes)))"
    }

    /// KV cache bytes per position: layers * 2 (keys, values) * kv_heads * head_dim * element
    /// size (+ one float32 scale per head row for int8).
    public static func kvBytesPerToken(_ c: ModelConfig, _ type: KVCacheType) -> Int {
        let values = c.numHiddenLayers * 2 * c.numKeyValueHeads * c.headDim
        switch type {
        case .float32: return 4 * values
        case .float16: return 2 * values
        case .int8: return values + 4 * c.numHiddenLayers * 2 * c.numKeyValueHeads
        }
    }

    public init(weightsBytes: Int, kvCacheBytes: Int, scratchBytes: Int, contextTokens: Int) {
        self.weightsBytes = weightsBytes
        self.kvCacheBytes = kvCacheBytes
        self.scratchBytes = scratchBytes
        self.contextTokens = contextTokens
    }

    /// The estimate for `backend` with a session of `options`.
    public static func estimate(weights: ModelWeights, backend: InferenceBackend, options: SessionOptions) -> MemoryEstimate {
        let c = weights.config
        let rows = options.cacheRows(config: c)
        return MemoryEstimate(weightsBytes: weights.residentBytes,
                              kvCacheBytes: rows * kvBytesPerToken(c, options.kvCache),
                              scratchBytes: backend.scratchBytes(options), contextTokens: rows)
    }
}

func mib(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
func mib(_ bytes: UInt64) -> String { mib(Int(clamping: bytes)) }

public protocol MemoryBudget: Sendable {
    /// Bytes the process may still use, nil when unknown (no check).
    func availableBytes() -> UInt64?
    /// Where the number comes from (for the error message).
    var source: String { get }
}

/// A fixed budget (tests, or an app's own limit).
public struct FixedMemoryBudget: MemoryBudget {
    public let bytes: UInt64?
    public init(bytes: UInt64?) { self.bytes = bytes }
    public func availableBytes() -> UInt64? { bytes }
    public var source: String { "a fixed budget" }
}

public struct SystemMemoryBudget: MemoryBudget {
    public init() {}

    public func availableBytes() -> UInt64? {
        #if os(iOS) || os(tvOS) || os(visionOS) || os(watchOS)
        let n = os_proc_available_memory()
        return n > 0 ? UInt64(n) : nil  // 0 when there is no limit (simulator)
        #elseif canImport(Darwin)
        return ProcessInfo.processInfo.physicalMemory
        #else
        return SystemMemoryBudget.memAvailable(meminfo: (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? "")
        #endif
    }

    public var source: String {
        #if os(iOS) || os(tvOS) || os(visionOS) || os(watchOS)
        return "os_proc_available_memory()"
        #elseif canImport(Darwin)
        return "physical memory"
        #else
        return "MemAvailable in /proc/meminfo"
        #endif
    }

    /// `MemAvailable:  123 kB` → bytes.
    static func memAvailable(meminfo: String) -> UInt64? {
        for line in meminfo.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let parts = line.split(separator: " ")
            if parts.count >= 2, let kb = UInt64(parts[1]) { return kb * 1024 }
        }
        return nil
    }
}

extension MemoryEstimate {
    /// Throws InferenceError.insufficientMemory when the estimate exceeds the budget.
    public func check(against budget: MemoryBudget, what: String) throws {
        guard let available = budget.availableBytes() else { return }
        if UInt64(totalBytes) > available {
            throw InferenceError.insufficientMemory(
                "\(what) needs about \(description), more than the \(mib(available)) available (\(budget.source)). " +
                "Use a smaller context (GenerateParameters.maxKVSize, fewer maxTokens), kvCache .float16/.int8, or a smaller checkpoint.")
        }
    }
}

extension ModelWeights {
    /// Bytes of the checkpoint tensors the backends read, plus the float copies made at load.
    public var residentBytes: Int {
        var mats = [embedding]
        var floats = finalNorm.count
        for l in layers {
            mats += [l.q, l.k, l.v, l.o, l.gateUp, l.down]
            mats += [l.sharedGate, l.sharedUp, l.sharedDown].compactMap { $0 }
            floats += l.inputNorm.count + l.postAttentionNorm.count + l.router.count + l.expertBias.count
        }
        return mats.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.byteCount } } + 4 * floats
    }
}
