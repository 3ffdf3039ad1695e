// tokenizers' added vocabulary: added/special tokens are cut out of the text before
// normalization and pre-tokenization (leftmost match, longest on ties), honouring
// lstrip / rstrip (absorb neighbouring whitespace) and single_word.

struct AddedToken {
    let id: Int
    let content: String
    let special: Bool
    let lstrip: Bool
    let rstrip: Bool
    let singleWord: Bool
}

enum Segment: Equatable {
    case text(Substring)
    case token(Int)
}

struct AddedVocabulary {
    let tokens: [AddedToken]
    private let byFirstScalar: [Unicode.Scalar: [AddedToken]]

    init(_ tokens: [AddedToken]) {
        self.tokens = tokens
        var map: [Unicode.Scalar: [AddedToken]] = [:]
        for t in tokens where !t.content.isEmpty {
            map[t.content.unicodeScalars.first!, default: []].append(t)
        }
        byFirstScalar = map.mapValues { $0.sorted { $0.content.unicodeScalars.count > $1.content.unicodeScalars.count } }
    }

    func split(_ text: String) -> [Segment] {
        guard !byFirstScalar.isEmpty else { return [.text(text[...])] }
        let scalars = text.unicodeScalars
        var segments: [Segment] = []
        var textStart = scalars.startIndex
        var i = scalars.startIndex
        while i < scalars.endIndex {
            guard let candidates = byFirstScalar[scalars[i]],
                  let (token, end) = candidates.lazy.compactMap({ t in match(t, in: scalars, at: i).map { (t, $0) } }).first
            else { i = scalars.index(after: i); continue }
            var start = i, stop = end
            if token.lstrip {
                while start > textStart, scalars[scalars.index(before: start)].properties.isWhitespace { start = scalars.index(before: start) }
            }
            if token.rstrip {
                while stop < scalars.endIndex, scalars[stop].properties.isWhitespace { stop = scalars.index(after: stop) }
            }
            if start > textStart { segments.append(.text(Substring(scalars[textStart..<start]))) }
            segments.append(.token(token.id))
            textStart = stop
            i = stop
        }
        if textStart < scalars.endIndex { segments.append(.text(Substring(scalars[textStart...]))) }
        return segments
    }

    /// End index when `token` occurs at `i` (and, for single_word, is not inside a word).
    private func match(_ token: AddedToken, in s: String.UnicodeScalarView, at i: String.UnicodeScalarView.Index) -> String.UnicodeScalarView.Index? {
        var j = i
        for u in token.content.unicodeScalars {
            guard j < s.endIndex, s[j] == u else { return nil }
            j = s.index(after: j)
        }
        if token.singleWord {
            func isWord(_ u: Unicode.Scalar) -> Bool { u.properties.isAlphabetic || u.properties.numericType != nil || u == "_" }
            if i > s.startIndex, isWord(s[s.index(before: i)]) { return nil }
            if j < s.endIndex, isWord(s[j]) { return nil }
        }
        return j
    }
}
