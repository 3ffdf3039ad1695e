// Stop strings over streamed text: text is passed on as soon as it can no longer be the start
// of a stop string; when a stop string appears, the text before it is passed on and generation
// ends. Works on Characters, so a stop string split across tokens (or across the bytes of one
// character) is still found.

struct StopStringMatcher {
    let stops: [String]
    private var pending = ""

    init(_ stops: [String]) { self.stops = stops }

    /// Text safe to emit now, and whether a stop string was completed (then `text` ends right
    /// before it and nothing more may be emitted).
    mutating func feed(_ text: String) -> (text: String, stopped: Bool) {
        guard !stops.isEmpty else { return (text, false) }
        pending += text
        // Earliest stop string occurrence.
        var first: Range<String.Index>?
        for s in stops {
            if let r = pending.range(of: s), first == nil || r.lowerBound < first!.lowerBound { first = r }
        }
        if let r = first {
            let out = String(pending[..<r.lowerBound])
            pending = ""
            return (out, true)
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        var hold = 0
        for s in stops {
            var n = min(s.count - 1, pending.count)
            while n > hold {
                if pending.hasSuffix(s.prefix(n)) { hold = n; break }
                n -= 1
            }
        }
        let cut = pending.index(pending.endIndex, offsetBy: -hold)
        let out = String(pending[..<cut])
        pending = String(pending[cut...])
        return (out, false)
    }

    /// What is still held back (generation ended without a stop string).
    mutating func flush() -> String {
        defer { pending = "" }
        return pending
    }
}
