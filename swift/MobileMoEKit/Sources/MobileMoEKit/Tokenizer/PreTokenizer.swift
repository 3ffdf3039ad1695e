// tokenizers' pre-tokenizers: `Split` (a regex, behaviour Isolated or Removed), `ByteLevel`
// (optional GPT-2 regex split, then bytes -> characters), `Metaspace` (spaces -> ▁, prepend
// scheme always/first/never, optional split before each ▁), `Sequence`.
// Regexes run on ICU (NSRegularExpression); `\s`/`\S` are rewritten to Unicode White_Space
// so they mean what they mean in Oniguruma, the engine `tokenizers` uses.
import Foundation

enum PreTokenizer {
    case split(NSRegularExpression, removeMatches: Bool)
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case metaspace(replacement: String, prepend: PrependScheme, split: Bool)
    case sequence([PreTokenizer])

    enum PrependScheme: String { case always, first, never }

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    init(json: JSONValue) throws {
        switch json["type"]?.string {
        case "Split":
            guard let pattern = json["pattern"]?["Regex"]?.string ?? json["pattern"]?["String"]?.string.map(NSRegularExpression.escapedPattern(for:))
            else { throw TokenizerError.unsupported("Split pre-tokenizer without a pattern") }
            if json["invert"]?.bool == true { throw TokenizerError.unsupported("Split pre-tokenizer with invert=true") }
            let behavior = json["behavior"]?.string ?? "Isolated"
            guard behavior == "Isolated" || behavior == "Removed" else {
                throw TokenizerError.unsupported("Split pre-tokenizer behavior '\(behavior)' (Isolated and Removed are supported)")
            }
            self = .split(try PreTokenizer.regex(pattern), removeMatches: behavior == "Removed")
        case "ByteLevel":
            self = .byteLevel(addPrefixSpace: json["add_prefix_space"]?.bool ?? false, useRegex: json["use_regex"]?.bool ?? true)
        case "Metaspace":
            let replacement = json["replacement"]?.string ?? "▁"
            let legacy = json["add_prefix_space"]?.bool.map { $0 ? "always" : "never" }
            guard let scheme = PrependScheme(rawValue: json["prepend_scheme"]?.string ?? legacy ?? "always") else {
                throw TokenizerError.unsupported("Metaspace prepend_scheme '\(json["prepend_scheme"]?.string ?? "")'")
            }
            self = .metaspace(replacement: replacement, prepend: scheme, split: json["split"]?.bool ?? true)
        case "Sequence":
            guard let items = json["pretokenizers"]?.array else { throw TokenizerError.invalid("Sequence pre-tokenizer without pretokenizers") }
            self = .sequence(try items.map(PreTokenizer.init(json:)))
        case let other:
            throw TokenizerError.unsupported("pre-tokenizer '\(other ?? "?")' (supported: Split, ByteLevel, Metaspace, Sequence)")
        }
    }

    static func regex(_ pattern: String) throws -> NSRegularExpression {
        let rewritten = pattern.replacingOccurrences(of: #"(?<!\\)((?:\\\\)*)\\s"#, with: "$1\\\\p{White_Space}", options: .regularExpression)
            .replacingOccurrences(of: #"(?<!\\)((?:\\\\)*)\\S"#, with: "$1\\\\P{White_Space}", options: .regularExpression)
        do { return try NSRegularExpression(pattern: rewritten) } catch {
            throw TokenizerError.unsupported("regex '\(pattern)' does not compile: \(error)")
        }
    }

    /// Splits `pieces` further; the final pieces are byte-level strings when a ByteLevel step ran.
    /// `atStart`: the first piece begins the whole input (Metaspace's "first" scheme).
    func apply(_ pieces: [String], atStart: Bool = true) -> [String] {
        switch self {
        case let .metaspace(replacement, prepend, split):
            return pieces.enumerated().flatMap { i, piece -> [String] in
                // All by scalar: " " + a combining mark is still a space to tokenizers.
                var p = piece.replacingOccurrences(of: " ", with: replacement, options: .literal)
                let prefix = prepend == .always || (prepend == .first && atStart && i == 0)
                if prefix && !p.unicodeScalars.starts(with: replacement.unicodeScalars) { p = replacement + p }
                return split ? PreTokenizer.splitBefore(p, replacement) : [p]
            }
        case let .split(re, remove):
            return pieces.flatMap { PreTokenizer.split($0, re, keepMatches: !remove) }
        case let .byteLevel(addPrefixSpace, useRegex):
            return pieces.flatMap { piece -> [String] in
                var p = piece
                if addPrefixSpace && p.unicodeScalars.first != " " { p = " " + p }
                let parts = useRegex ? PreTokenizer.split(p, PreTokenizer.gpt2, keepMatches: true) : [p]
                return parts.map { ByteLevel.encode($0[...]) }
            }
        case let .sequence(steps):
            // Only the first piece of the first step's output can still begin the input.
            return steps.reduce(pieces) { $1.apply($0, atStart: atStart) }
        }
    }

    static let gpt2: NSRegularExpression = try! regex(gpt2Pattern)

    /// "▁a▁b" -> ["▁a", "▁b"] (tokenizers' MergedWithNext split on the replacement scalar).
    static func splitBefore(_ s: String, _ marker: String) -> [String] {
        guard let m = marker.unicodeScalars.first else { return [s] }
        var out: [String] = []
        var current = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            if u == m && !current.isEmpty { out.append(String(current)); current = String.UnicodeScalarView() }
            current.append(u)
        }
        if !current.isEmpty { out.append(String(current)) }
        return out
    }

    /// Isolated: matches and the gaps between them each become a piece (Removed: gaps only).
    static func split(_ text: String, _ re: NSRegularExpression, keepMatches: Bool) -> [String] {
        let ns = text as NSString
        var out: [String] = []
        var last = 0
        for m in re.matches(in: text, range: NSRange(location: 0, length: ns.length)) where m.range.length > 0 {
            if m.range.location > last { out.append(ns.substring(with: NSRange(location: last, length: m.range.location - last))) }
            if keepMatches { out.append(ns.substring(with: m.range)) }
            last = m.range.location + m.range.length
        }
        if last < ns.length { out.append(ns.substring(from: last)) }
        return out
    }
}
