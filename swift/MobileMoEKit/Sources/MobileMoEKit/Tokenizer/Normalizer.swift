// tokenizers' normalizers that byte-level and sentencepiece-exported tokenizer.json files use:
// none, NFC, NFKC, Prepend, Replace (string patterns), Sequence.
import Foundation

indirect enum Normalizer {
    case none, nfc, nfkc
    case prepend(String)
    case replace(String, String)
    case sequence([Normalizer])

    init(json: JSONValue) throws {
        if json.isNull { self = .none; return }
        switch json["type"]?.string {
        case "NFC": self = .nfc
        case "NFKC": self = .nfkc
        case "Prepend":
            guard let p = json["prepend"]?.string else { throw TokenizerError.invalid("Prepend normalizer without prepend") }
            self = .prepend(p)
        case "Replace":
            guard let pattern = json["pattern"]?["String"]?.string, let content = json["content"]?.string else {
                throw TokenizerError.unsupported("Replace normalizer with a regex pattern (string patterns only)")
            }
            self = .replace(pattern, content)
        case "Sequence": self = .sequence(try (json["normalizers"]?.array ?? []).map(Normalizer.init(json:)))
        case let other:
            throw TokenizerError.unsupported("normalizer '\(other ?? "?")' (supported: NFC, NFKC, Prepend, Replace, Sequence)")
        }
    }

    func apply(_ s: String) -> String {
        switch self {
        case .none: return s
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case let .prepend(p): return s.isEmpty ? s : p + s
        case let .replace(pattern, content): return s.replacingOccurrences(of: pattern, with: content, options: .literal)
        case let .sequence(steps): return steps.reduce(s) { $1.apply($0) }
        }
    }
}
