// tokenizers' `BPE` model: a vocabulary, ranked merges, and the merge loop that repeatedly
// joins the lowest-ranked adjacent pair (leftmost first) inside one pre-token.
import Foundation

final class BPEModel: @unchecked Sendable {
    let vocab: [String: Int]
    let idToToken: [Int: String]
    /// (left id, right id) packed in a UInt64 -> (rank, merged id).
    private let merges: [UInt64: (rank: Int, id: Int)]
    let ignoreMerges: Bool
    let byteFallback: Bool
    let unkId: Int?
    let fuseUnk: Bool
    private var cache: [String: [Int]] = [:]
    private let lock = NSLockLike()

    init(vocab: [String: Int], merges: [(String, String)], ignoreMerges: Bool, byteFallback: Bool, unkToken: String?,
         fuseUnk: Bool = false) throws {
        self.vocab = vocab
        var inverse: [Int: String] = [:]
        for (t, i) in vocab { inverse[i] = t }
        idToToken = inverse
        var table: [UInt64: (Int, Int)] = [:]
        table.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            guard let ia = vocab[a], let ib = vocab[b], let merged = vocab[a + b] else {
                throw TokenizerError.invalid("merge '\(a) \(b)' uses tokens missing from the vocabulary")
            }
            let key = UInt64(ia) << 32 | UInt64(ib)
            if table[key] == nil { table[key] = (rank, merged) }
        }
        self.merges = table
        self.ignoreMerges = ignoreMerges
        self.byteFallback = byteFallback
        self.unkId = unkToken.flatMap { vocab[$0] }
        self.fuseUnk = fuseUnk
    }

    /// Token ids of one pre-token (already in byte-level characters).
    func encode(word: String) -> [Int] {
        if ignoreMerges, let id = vocab[word] { return [id] }
        if let hit = lock.withLock({ cache[word] }) { return hit }
        // Initial symbols: one per Unicode scalar (as Rust chars), else its <0xNN> bytes
        // (byte_fallback, all or nothing), else unk (consecutive unks fused with fuse_unk).
        var ids: [Int] = []
        var lastWasUnk = false
        for scalar in word.unicodeScalars {
            let s = String(scalar)
            if let id = vocab[s] {
                ids.append(id)
                lastWasUnk = false
                continue
            }
            if byteFallback {
                let bytes = s.utf8.compactMap { vocab[String(format: "<0x%02X>", $0)] }
                if bytes.count == s.utf8.count {
                    ids += bytes
                    lastWasUnk = false
                    continue
                }
            }
            if let u = unkId, !(fuseUnk && lastWasUnk) { ids.append(u) }
            lastWasUnk = unkId != nil
        }
        while ids.count > 1 {
            var best: (rank: Int, pos: Int, id: Int)? = nil
            for p in 0..<ids.count - 1 {
                if let m = merges[UInt64(ids[p]) << 32 | UInt64(ids[p + 1])], best == nil || m.rank < best!.rank {
                    best = (m.rank, p, m.id)
                }
            }
            guard let b = best else { break }
            ids[b.pos] = b.id
            ids.remove(at: b.pos + 1)
        }
        lock.withLock { if cache.count < 100_000 { cache[word] = ids } }
        return ids
    }
}



/// NSLock with a closure helper (Foundation's `withLock` is not on every platform version).
final class NSLockLike: @unchecked Sendable {
    private let lock = NSLock()
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}
