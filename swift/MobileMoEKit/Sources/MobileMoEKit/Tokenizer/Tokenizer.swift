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
    /// tokenizer_config.json's add_bos_token / add_eos_token (nil: not given).
    public let addBOSToken: Bool?
    public let addEOSToken: Bool?
    private let addedById: [Int: AddedToken]
    public let vocabularySize: Int
    public let bosToken: String?
    public let eosToken: String?
    public let chatTemplate: ChatTemplate?

    /// tokenizer.json, tokenizer_config.json (optional) and chat_template.jinja (optional; like
    /// transformers, it takes priority over tokenizer_config.json's chat_template). Regular files
    /// only, size-limited (FileLimits).
    public convenience init(directory: URL) throws {
        func read(_ name: String, limit: Int) throws -> Data {
            do { return try RegularFile.read(directory.appendingPathComponent(name).path, limit: limit) } catch {
                throw TokenizerError.invalid("cannot read \(name): \(error)")
            }
        }
        func parse(_ name: String, limit: Int) throws -> JSONValue {
            let data = try read(name, limit: limit)
            do { return try JSONValue.parse(data) } catch { throw TokenizerError.invalid("\(name) is not valid JSON: \(error)") }
        }
        func present(_ name: String) -> Bool { RegularFile.exists(directory.appendingPathComponent(name).path) }
        let json = try parse("tokenizer.json", limit: FileLimits.tokenizerJSON)
        let config = present("tokenizer_config.json") ? try parse("tokenizer_config.json", limit: FileLimits.smallJSON) : nil
        var templateSource: String? = nil
        if present("chat_template.jinja") {
            let data = try read("chat_template.jinja", limit: FileLimits.chatTemplate)
            guard let text = String(validating: data, as: UTF8.self) else {
                throw TokenizerError.chatTemplate("chat_template.jinja is not valid UTF-8")
            }
            templateSource = text
        }
        try self.init(tokenizerJSON: json, tokenizerConfig: config, chatTemplateSource: templateSource)
    }

    /// `chatTemplateSource` (chat_template.jinja) overrides tokenizer_config.json's template.
    public init(tokenizerJSON json: JSONValue, tokenizerConfig config: JSONValue? = nil, chatTemplateSource: String? = nil) throws {
        guard json.object != nil else { throw TokenizerError.invalid("top level is not an object") }
        if let c = config, c.object == nil { throw TokenizerError.invalid("tokenizer_config.json: top level is not an object") }
        guard let m = json["model"], m["type"]?.string ?? "BPE" == "BPE" else {
            throw TokenizerError.unsupported("model type '\(json["model"]?["type"]?.string ?? "?")' (only BPE)")
        }
        if let p = m["continuing_subword_prefix"]?.string, !p.isEmpty { throw TokenizerError.unsupported("continuing_subword_prefix") }
        if let p = m["end_of_word_suffix"]?.string, !p.isEmpty { throw TokenizerError.unsupported("end_of_word_suffix") }
        guard let vocabJSON = m["vocab"]?.object else { throw TokenizerError.invalid("model.vocab is not an object") }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(vocabJSON.count)
        for (t, v) in vocabJSON {
            guard let id = v.int, (0..<Tokenizer.maxId).contains(id) else {
                throw TokenizerError.invalid("vocab id of '\(t)' is not an integer in 0..<\(Tokenizer.maxId)")
            }
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

        if let a = json["added_tokens"], !a.isNull, a.array == nil { throw TokenizerError.invalid("added_tokens is not a list") }
        let addedTokens: [AddedToken] = try (json["added_tokens"]?.array ?? []).map { t in
            guard let id = t["id"]?.int, (0..<Tokenizer.maxId).contains(id), let content = t["content"]?.string, !content.isEmpty else {
                throw TokenizerError.invalid("added token without an id in 0..<\(Tokenizer.maxId) and a non-empty content: \(t)")
            }
            func flag(_ k: String) throws -> Bool {
                guard let v = t[k], !v.isNull else { return false }
                guard let b = v.bool else { throw TokenizerError.invalid("added token \(id): \(k) is not true/false") }
                return b
            }
            return AddedToken(id: id, content: content, special: try flag("special"), lstrip: try flag("lstrip"),
                              rstrip: try flag("rstrip"), singleWord: try flag("single_word"))
        }
        added = AddedVocabulary(addedTokens)
        addedById = Dictionary(addedTokens.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        normalizer = try Normalizer(json: json["normalizer"] ?? .null)
        if let pre = json["pre_tokenizer"], !pre.isNull { preTokenizer = try PreTokenizer(json: pre) } else { preTokenizer = nil }
        decoder = try TokenDecoder(json: json["decoder"] ?? .null)
        var (prefix, suffix) = try Tokenizer.template(json["post_processor"] ?? .null)
        let size = max((vocab.values.max() ?? -1) + 1, (addedTokens.map(\.id).max() ?? -1) + 1)
        vocabularySize = size
        func lookup(_ t: String) -> Int? { addedTokens.first { $0.content == t }?.id ?? vocab[t] }
        if let bad = (prefix + suffix).first(where: { !(0..<size).contains($0) }) {
            throw TokenizerError.invalid("post_processor adds id \(bad), outside the vocabulary")
        }

        // tokenizer_config.json: bos/eos tokens (a string, an AddedToken object or null),
        // add_bos_token / add_eos_token, the chat template.
        func tokenString(_ k: String) throws -> String? {
            guard let v = config?[k], !v.isNull else { return nil }
            guard let t = v.string ?? v["content"]?.string else { throw TokenizerError.invalid("tokenizer_config.json: \(k) is neither a string nor a token object") }
            guard lookup(t) != nil else { throw TokenizerError.invalid("tokenizer_config.json: \(k) '\(t)' is not in the vocabulary") }
            return t
        }
        func flag(_ k: String) throws -> Bool? {
            guard let v = config?[k], !v.isNull else { return nil }
            guard let b = v.bool else { throw TokenizerError.invalid("tokenizer_config.json: \(k) is not true/false") }
            return b
        }
        let bos = try tokenString("bos_token"), eos = try tokenString("eos_token")
        let addBOS = try flag("add_bos_token"), addEOS = try flag("add_eos_token")
        var source = chatTemplateSource
        if source == nil, let t = config?["chat_template"], !t.isNull {
            guard let s = t.string else { throw TokenizerError.chatTemplate("named/multiple templates are not supported; give one template string") }
            source = s
        }
        let template = try source.map(ChatTemplate.init(source:))
        // Everything the prompt path needs must exist now, not at the first message.
        if let template {
            for marker in template.family.markers.all where !addedTokens.contains(where: { $0.content == marker }) {
                throw TokenizerError.chatTemplate("the template's token \(marker) is not an added token of this tokenizer")
            }
            if template.writesBOSToken || addBOS == true, bos == nil {
                throw TokenizerError.chatTemplate("the prompt starts with bos_token but tokenizer_config.json names none")
            }
        }
        // As transformers: an explicit add_bos_token / add_eos_token replaces the post-processor's
        // single-sequence template.
        if addBOS != nil || addEOS != nil {
            if addBOS == true, bos == nil { throw TokenizerError.invalid("add_bos_token is true but there is no bos_token") }
            if addEOS == true, eos == nil { throw TokenizerError.invalid("add_eos_token is true but there is no eos_token") }
            prefix = addBOS == true ? [lookup(bos!)!] : []
            suffix = addEOS == true ? [lookup(eos!)!] : []
        }
        prefixIds = prefix
        suffixIds = suffix
        bosToken = bos
        eosToken = eos
        addBOSToken = addBOS
        addEOSToken = addEOS
        chatTemplate = template
    }

    /// Largest token id + 1 accepted in a tokenizer file (2^24: far above any vocabulary).
    static let maxId = 1 << 24

    /// The ids of a chat prompt: the template rendered, then tokenized without the
    /// post-processor; a BOS first when the template writes `bos_token`, or else when
    /// tokenizer_config.json says add_bos_token (the released MobileMoE tokenizer does).
    public func chatPromptIds(_ messages: [ChatMessage], template: ChatTemplate, addGenerationPrompt: Bool = true) throws -> [Int] {
        let text = try template.render(messages, bosToken: bosToken, addGenerationPrompt: addGenerationPrompt)
        var ids = encode(text, addSpecialTokens: false)
        if !template.writesBOSToken, addBOSToken == true, let bos = bosToken.flatMap(tokenId) { ids.insert(bos, at: 0) }
        return ids
    }

    /// Every id this tokenizer can produce must index the model's embedding.
    public func checkFits(vocabularySize modelVocab: Int) throws {
        guard vocabularySize <= modelVocab else {
            throw TokenizerError.invalid("the tokenizer has ids up to \(vocabularySize - 1) but the model's vocab_size is \(modelVocab)")
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
                      let idValues = p["special_tokens"]?[name]?["ids"]?.array
                else { throw TokenizerError.invalid("TemplateProcessing piece \(piece)") }
                let ids = idValues.compactMap(\.int)
                guard ids.count == idValues.count else { throw TokenizerError.invalid("TemplateProcessing ids of \(name) are not all integers") }
                if seenSequence { post += ids } else { pre += ids }
            }
            return (pre, post)
        case let other:
            throw TokenizerError.unsupported("post-processor '\(other!)'")
        }
    }
}
