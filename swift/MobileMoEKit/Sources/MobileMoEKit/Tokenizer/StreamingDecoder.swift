// Turns a stream of token ids into text chunks that never end inside a UTF-8 character: the
// bytes of an incomplete trailing sequence wait for the next token (llama.cpp's approach).
// Invalid bytes become U+FFFD, as tokenizers' lossy decoding does.

public struct StreamingDecoder {
    private let tokenizer: Tokenizer
    private let skipSpecialTokens: Bool
    private var pending: [UInt8] = []
    /// Leading characters the decoder still strips from the start of the text (sentencepiece).
    private var stripLeft: Int

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = true) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        stripLeft = tokenizer.decoder.stripLeading?.count ?? 0
    }

    /// Text that became complete with `token` (possibly empty).
    public mutating func append(_ token: Int) -> String {
        append(bytes: tokenizer.bytes(of: token, skipSpecialTokens: skipSpecialTokens))
    }

    public mutating func append(bytes: [UInt8]) -> String {
        pending += bytes
        let keep = StreamingDecoder.incompleteSuffixLength(pending)
        let ready = pending[..<(pending.count - keep)]
        let text = String(decoding: ready, as: UTF8.self)
        pending.removeFirst(pending.count - keep)
        return strip(text)
    }

    /// Whatever is left (an unfinished character shows as U+FFFD).
    public mutating func finish() -> String {
        defer { pending = [] }
        return strip(String(decoding: pending, as: UTF8.self))
    }

    private mutating func strip(_ text: String) -> String {
        guard stripLeft > 0, !text.isEmpty, let c = tokenizer.decoder.stripLeading?.content else { return text }
        var s = Substring(text).unicodeScalars
        while stripLeft > 0, s.first == c { s = s.dropFirst(); stripLeft -= 1 }
        if !s.isEmpty { stripLeft = 0 }  // only the very start of the text is stripped
        return String(s)
    }

    /// Length of a trailing sequence that is a valid but unfinished UTF-8 character (0...3).
    static func incompleteSuffixLength(_ b: [UInt8]) -> Int {
        var i = b.count - 1
        var continuation = 0
        while i >= 0 && continuation < 3 && b[i] & 0xC0 == 0x80 { i -= 1; continuation += 1 }
        guard i >= 0 else { return 0 }
        let lead = b[i]
        let need: Int
        switch lead {
        case 0xC2...0xDF: need = 1
        case 0xE0...0xEF: need = 2
        case 0xF0...0xF4: need = 3
        default: return 0
        }
        guard continuation < need else { return 0 }
        // Reject prefixes no continuation could make valid (overlong / surrogate / > U+10FFFF).
        if continuation >= 1 {
            let second = b[i + 1]
            switch lead {
            case 0xE0 where second < 0xA0, 0xED where second > 0x9F, 0xF0 where second < 0x90, 0xF4 where second > 0x8F: return 0
            default: break
            }
        }
        return continuation + 1
    }
}
