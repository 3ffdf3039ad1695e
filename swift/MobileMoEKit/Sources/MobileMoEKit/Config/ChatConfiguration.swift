// What a checkpoint folder says about prompts and stopping, settled at load time:
// the chat template (checked against the tokenizer), the BOS id, and every id that ends a
// reply: eos_token_id of config.json AND of generation_config.json, the tokenizer's eos_token,
// and the end-of-turn token of the template's format (<|eot|> for the released MobileMoE
// format, <|eot_id|> for Llama 3) when the tokenizer has it.
import Foundation

public struct ChatConfiguration: Sendable {
    public let template: ChatTemplate?
    public let bosTokenId: Int?
    public let stopTokenIds: Set<Int>

    /// Also checks that the tokenizer's ids fit the model's vocabulary and that every stop id
    /// is inside it.
    public init(directory: URL, config: ModelConfig, tokenizer: Tokenizer) throws {
        try tokenizer.checkFits(vocabularySize: config.vocabSize)
        template = tokenizer.chatTemplate
        bosTokenId = tokenizer.bosToken.flatMap(tokenizer.tokenId) ?? config.bosTokenId
        var stops = Set(config.eosTokenIds)
        stops.formUnion(try ChatConfiguration.generationConfigEos(directory: directory))
        if let eos = tokenizer.eosToken.flatMap(tokenizer.tokenId) { stops.insert(eos) }
        for marker in [ChatTemplate.mobileMoEMarkers.endOfTurn, ChatTemplate.llama3Markers.endOfTurn] {
            if let id = tokenizer.tokenId(marker) { stops.insert(id) }
        }
        if let bad = stops.union(bosTokenId.map { [$0] } ?? []).sorted().first(where: { $0 >= config.vocabSize }) {
            throw ConfigError("special token id \(bad) (bos/eos) is outside the model's vocabulary of \(config.vocabSize)")
        }
        stopTokenIds = stops
    }

    /// eos_token_id of generation_config.json (an id or a list of ids; the file is optional,
    /// but a file that is there must be valid).
    static func generationConfigEos(directory: URL) throws -> [Int] {
        let url = directory.appendingPathComponent("generation_config.json")
        guard RegularFile.exists(url.path) else { return [] }
        let json: JSONValue
        do { json = try JSONValue.parse(contentsOf: url) } catch { throw ConfigError("generation_config.json: \(error)") }
        guard json.object != nil else { throw ConfigError("generation_config.json: top level is not an object") }
        guard let v = json["eos_token_id"], !v.isNull else { return [] }
        if let id = v.int, id >= 0 { return [id] }
        guard let a = v.array else { throw ConfigError("generation_config.json: eos_token_id must be an integer or a list of integers, got \(v)") }
        return try a.map {
            guard let id = $0.int, id >= 0 else { throw ConfigError("generation_config.json: eos_token_id holds \($0), not an integer >= 0") }
            return id
        }
    }
}
