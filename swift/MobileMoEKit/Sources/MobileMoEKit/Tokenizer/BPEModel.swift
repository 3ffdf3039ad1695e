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
    private var cache: [String: [Int]] = [:]
    private let lock = NSLockLike()

    init(vocab: [String: Int], merges: [(String, String)], ignoreMerges: Bool, byteFallback: Bool, unkToken: String?) throws {
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
    }

    /// Token ids of one pre-token (already in byte-level characters).
    func encode(word: String) -> [Int] {
        if ignoreMerges, let id = vocab[word] { return [id] }
        if let hit = lock.withLock({ cache[word] }) { return hit }
        var ids: [Int] = []
        for ch in word {
            let s = String(ch)
            if let id = vocab[s] {
                ids.append(id)
            } else if byteFallback {
                for b in s.utf8 {
                    if let id = vocab[String(format: "<0x%02X>", b)] { ids.append(id) } else if let u = unkId { ids.append(u) }
                }
            } else if let u = unkId {
                ids.append(u)
            }
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
