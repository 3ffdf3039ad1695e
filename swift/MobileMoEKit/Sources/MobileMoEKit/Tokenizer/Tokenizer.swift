// A `tokenizer.json` (Hugging Face tokenizers) BPE tokenizer in the two shapes checkpoints
// ship: byte-level (Llama 3 and our own: Split + ByteLevel, ByteLevel decoder) and
// sentencepiece-exported (Prepend/Replace normalizers or a Metaspace pre-tokenizer, byte
// fallback, Replace/ByteFallback/Fuse/Strip decoders). Added/special tokens, TemplateProcessing
// post-processor; plus tokenizer_config.json's chat template and bos/eos.
import Foundation

public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    case unsupported(String)
    case chatTemplate(String)

    public var description: String {
        switch self {
        case let .invalid(why): return "tokenizer.json is invalid: \(why)"
        case let .unsupported(what): return "tokenizer.json uses something not supported here: \(what)"
        case let .chatTemplate(why): return "chat template: \(why)"
        }
    }
}

public final class Tokenizer: @unchecked Sendable {
    let model: BPEModel
    let added: AddedVocabulary
    let normalizer: Normalizer
    let preTokenizer: PreTokenizer?
    let decoder: TokenDecoder
    /// Ids put around a sequence when `addSpecialTokens` (TemplateProcessing "single").
    let prefixIds: [Int], suffixIds: [Int]
    private let addedById: [Int: AddedToken]
    public let vocabularySize: Int
    public let bosToken: String?
    public let eosToken: String?
    public let chatTemplate: ChatTemplate?

    public convenience init(directory: URL) throws {
        let json = try JSONValue.parse(Data(contentsOf: directory.appendingPathComponent("tokenizer.json")))
        let configURL = directory.appendingPathComponent("tokenizer_config.json")
        let config = FileManager.default.fileExists(atPath: configURL.path) ? try JSONValue.parse(Data(contentsOf: configURL)) : nil
        try self.init(tokenizerJSON: json, tokenizerConfig: config)
    }

    public init(tokenizerJSON json: JSONValue, tokenizerConfig config: JSONValue? = nil) throws {
        guard let m = json["model"], m["type"]?.string ?? "BPE" == "BPE" else {
            throw TokenizerError.unsupported("model type '\(json["model"]?["type"]?.string ?? "?")' (only BPE)")
        }
        if let p = m["continuing_subword_prefix"]?.string, !p.isEmpty { throw TokenizerError.unsupported("continuing_subword_prefix") }
        if let p = m["end_of_word_suffix"]?.string, !p.isEmpty { throw TokenizerError.unsupported("end_of_word_suffix") }
        guard let vocabJSON = m["vocab"]?.object else { throw TokenizerError.invalid("model.vocab is not an object") }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(vocabJSON.count)
        for (t, v) in vocabJSON {
            guard let id = v.int, id >= 0 else { throw TokenizerError.invalid("vocab id of '\(t)' is not a natural number") }
            vocab[t] = id
        }
        let merges: [(String, String)] = try (m["merges"]?.array ?? []).map { item in
            if let s = item.string {
                let parts = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw TokenizerError.invalid("merge '\(s)' is not two tokens") }
                return (String(parts[0]), String(parts[1]))
            }
            guard let pair = item.array, pair.count == 2, let a = pair[0].string, let b = pair[1].string else {
                throw TokenizerError.invalid("a merge is neither \"a b\" nor [\"a\", \"b\"]")
            }
            return (a, b)
        }
        model = try BPEModel(vocab: vocab, merges: merges, ignoreMerges: m["ignore_merges"]?.bool ?? false,
                             byteFallback: m["byte_fallback"]?.bool ?? false, unkToken: m["unk_token"]?.string,
                             fuseUnk: m["fuse_unk"]?.bool ?? false)

        let addedTokens: [AddedToken] = try (json["added_tokens"]?.array ?? []).map { t in
            guard let id = t["id"]?.int, let content = t["content"]?.string else { throw TokenizerError.invalid("added token without id/content") }
            return AddedToken(id: id, content: content, special: t["special"]?.bool ?? false, lstrip: t["lstrip"]?.bool ?? false,
                              rstrip: t["rstrip"]?.bool ?? false, singleWord: t["single_word"]?.bool ?? false)
        }
        added = AddedVocabulary(addedTokens)
        addedById = Dictionary(addedTokens.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        normalizer = try Normalizer(json: json["normalizer"] ?? .null)
        if let pre = json["pre_tokenizer"], !pre.isNull { preTokenizer = try PreTokenizer(json: pre) } else { preTokenizer = nil }
        decoder = try TokenDecoder(json: json["decoder"] ?? .null)
        (prefixIds, suffixIds) = try Tokenizer.template(json["post_processor"] ?? .null)
        vocabularySize = max((vocab.values.max() ?? -1) + 1, (addedTokens.map(\.id).max() ?? -1) + 1)

        func tokenString(_ v: JSONValue?) -> String? { v?.string ?? v?["content"]?.string }
        bosToken = tokenString(config?["bos_token"])
        eosToken = tokenString(config?["eos_token"])
        if let t = config?["chat_template"], !t.isNull {
            guard let source = t.string else { throw TokenizerError.chatTemplate("named/multiple templates are not supported; give one template string") }
            chatTemplate = ChatTemplate(source: source)
        } else {
            chatTemplate = nil
        }
    }

    // MARK: encode / decode

    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = addSpecialTokens ? prefixIds : []
        for segment in added.split(text) {
            switch segment {
            case let .token(id): ids.append(id)
            case let .text(s):
                let normalized = normalizer.apply(String(s))
                // Metaspace's prepend_scheme "first" prepends only at the start of the input.
                let atStart = s.startIndex == text.startIndex
                let pieces = preTokenizer?.apply([normalized], atStart: atStart) ?? [normalized]
                for piece in pieces where !piece.isEmpty { ids += model.encode(word: piece) }
            }
        }
        if addSpecialTokens { ids += suffixIds }
        return ids
    }

    /// The UTF-8 bytes of one token (empty for a skipped special token), before the decoder's
    /// rule for the start of the text (`decode` and StreamingDecoder apply it).
    public func bytes(of id: Int, skipSpecialTokens: Bool = true) -> [UInt8] {
        if let a = addedById[id] {
            return a.special && skipSpecialTokens ? [] : decoder.bytes(a.content)
        }
        guard let t = model.idToToken[id] else { return [] }
        return decoder.bytes(t)
    }

    public func decode(_ ids: [Int], skipSpecialTokens: Bool = true) -> String {
        decoder.stripped(String(decoding: ids.flatMap { bytes(of: $0, skipSpecialTokens: skipSpecialTokens) }, as: UTF8.self))
    }

    public func tokenId(_ token: String) -> Int? {
        added.tokens.first { $0.content == token }?.id ?? model.vocab[token]
    }

    public func isSpecial(_ id: Int) -> Bool { addedById[id]?.special ?? false }

    // MARK: json pieces

    /// TemplateProcessing's "single" template as ids before and after the sequence.
    static func template(_ p: JSONValue) throws -> ([Int], [Int]) {
        switch p["type"]?.string {
        case nil, "ByteLevel": return ([], [])
        case "Sequence":
            var pre: [Int] = [], post: [Int] = []
            for item in p["processors"]?.array ?? [] {
                let (a, b) = try template(item)
                pre += a; post = b + post
            }
            return (pre, post)
        case "TemplateProcessing":
            guard let single = p["single"]?.array else { throw TokenizerError.invalid("TemplateProcessing without single") }
            var pre: [Int] = [], post: [Int] = [], seenSequence = false
            for piece in single {
                if piece["Sequence"] != nil { seenSequence = true; continue }
                guard let name = piece["SpecialToken"]?["id"]?.string,
                      let ids = p["special_tokens"]?[name]?["ids"]?.array?.compactMap(\.int)
                else { throw TokenizerError.invalid("TemplateProcessing piece \(piece)") }
                if seenSequence { post += ids } else { pre += ids }
            }
            return (pre, post)
        case let other:
            throw TokenizerError.unsupported("post-processor '\(other!)'")
        }
    }
}
