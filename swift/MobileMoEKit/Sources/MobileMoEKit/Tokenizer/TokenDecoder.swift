// tokenizers' decoders, as bytes per token plus one rule for the start of the text, so that
// whole-sequence and streaming decoding agree. Supported: ByteLevel (Llama 3 family); the
// sentencepiece-exported chain Replace("▁", " ") → ByteFallback → Fuse → Strip(" ", n, 0); and
// Metaspace (▁ → space, leading space of the text dropped).
import Foundation

struct TokenDecoder {
    var byteLevel = false
    /// Replace decoders (string patterns), in order.
    var replacements: [(String, String)] = []
    /// `<0xNN>` tokens stand for the byte NN.
    var byteFallback = false
    /// Characters stripped from the start of the text (Strip's `start`; Metaspace: one space).
    var stripLeading: (content: Unicode.Scalar, count: Int)? = nil

    init(json: JSONValue) throws {
        if json.isNull { return }
        try add(json)
    }

    private mutating func add(_ d: JSONValue) throws {
        switch d["type"]?.string {
        case "ByteLevel": byteLevel = true
        case "Sequence": for item in d["decoders"]?.array ?? [] { try add(item) }
        case "Replace":
            guard let pattern = d["pattern"]?["String"]?.string, let content = d["content"]?.string else {
                throw TokenizerError.unsupported("Replace decoder with a regex pattern")
            }
            replacements.append((pattern, content))
        case "ByteFallback": byteFallback = true
        case "Fuse": break  // concatenation is what per-token bytes do anyway
        case "Strip":
            guard let content = d["content"]?.string, content.unicodeScalars.count == 1, (d["stop"]?.int ?? 0) == 0 else {
                throw TokenizerError.unsupported("Strip decoder other than stripping the start")
            }
            stripLeading = (content.unicodeScalars.first!, d["start"]?.int ?? 0)
        case "Metaspace":
            let replacement = d["replacement"]?.string ?? "▁"
            replacements.append((replacement, " "))
            if (d["prepend_scheme"]?.string ?? "always") != "never" && (d["add_prefix_space"]?.bool ?? true) {
                stripLeading = (" ", 1)
            }
        case let other:
            throw TokenizerError.unsupported("decoder '\(other ?? "?")' (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)")
        }
        if byteLevel && (!replacements.isEmpty || byteFallback) {
            throw TokenizerError.unsupported("ByteLevel mixed with sentencepiece-style decoders")
        }
    }

    /// The bytes one token contributes.
    func bytes(_ token: String) -> [UInt8] {
        if byteLevel { return ByteLevel.decode(token) }
        if byteFallback, let b = TokenDecoder.fallbackByte(token) { return [b] }
        var s = token
        for (pattern, content) in replacements { s = s.replacingOccurrences(of: pattern, with: content, options: .literal) }
        return Array(s.utf8)
    }

    /// NN of a `<0xNN>` token.
    static func fallbackByte(_ token: String) -> UInt8? {
        let u = Array(token.utf8)
        guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"), u[5] == UInt8(ascii: ">") else { return nil }
        return UInt8(String(decoding: u[3...4], as: UTF8.self), radix: 16)
    }

    /// `text` without the leading characters the decoder strips (by scalar, as tokenizers does:
    /// a space followed by a combining mark is still a space).
    func stripped(_ text: String) -> String {
        guard let (c, n) = stripLeading, n > 0 else { return text }
        var s = Substring(text).unicodeScalars, left = n
        while left > 0, s.first == c { s = s.dropFirst(); left -= 1 }
        return String(s)
    }
}
