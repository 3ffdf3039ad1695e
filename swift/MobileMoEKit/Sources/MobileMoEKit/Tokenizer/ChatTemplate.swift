// The chat templates rendered natively (no Jinja engine). Two header formats, both
//   [{{ bos_token }}] + for each message  HEADER_START role HEADER_END "\n\n" content END_OF_TURN
//   + (add_generation_prompt)             HEADER_START "assistant" HEADER_END "\n\n"
// with `content | trim` when the template trims:
//   - MobileMoE (the released checkpoints, Llama 4 style): <|header_start|>, <|header_end|>, <|eot|>
//   - Llama 3 (our own checkpoints, mlx_mobilemoe.tokenizer): <|start_header_id|>,
//     <|end_header_id|>, <|eot_id|>
// The template is recognised when it is loaded: a template in another format, or one that
// injects tools, dates or images, is a TokenizerError.chatTemplate at load time, never at the
// first message. Whether a BOS starts the prompt: the template's own `bos_token`, else the
// tokenizer's `add_bos_token` (Tokenizer.chatPromptIds).
import Foundation

public struct ChatMessage: Sendable, Equatable {
    public enum Role: String, Sendable { case system, user, assistant }
    public var role: Role
    public var content: String
    public init(role: Role, content: String) {
        self.role = role
        self.content = content
    }
    public static func system(_ s: String) -> ChatMessage { .init(role: .system, content: s) }
    public static func user(_ s: String) -> ChatMessage { .init(role: .user, content: s) }
    public static func assistant(_ s: String) -> ChatMessage { .init(role: .assistant, content: s) }
}

public struct ChatTemplate: Sendable {
    /// The header/turn tokens of a format.
    public struct Markers: Sendable, Equatable {
        public let headerStart: String
        public let headerEnd: String
        public let endOfTurn: String
        public var all: [String] { [headerStart, headerEnd, endOfTurn] }
    }

    public enum Family: Sendable, Equatable {
        /// The released MobileMoE format (Llama 4 style).
        case mobileMoE(trimsContent: Bool)
        /// The Llama 3 format our own checkpoints carry.
        case llama3(trimsContent: Bool)

        public var markers: Markers {
            switch self {
            case .mobileMoE: return ChatTemplate.mobileMoEMarkers
            case .llama3: return ChatTemplate.llama3Markers
            }
        }

        public var trimsContent: Bool {
            switch self {
            case let .mobileMoE(t), let .llama3(t): return t
            }
        }
    }

    public static let mobileMoEMarkers = Markers(headerStart: "<|header_start|>", headerEnd: "<|header_end|>", endOfTurn: "<|eot|>")
    public static let llama3Markers = Markers(headerStart: "<|start_header_id|>", headerEnd: "<|end_header_id|>", endOfTurn: "<|eot_id|>")

    /// Template features beyond the rendered subset.
    static let unsupportedFeatures = ["tools", "Cutting Knowledge", "strftime", "date_string", "ipython", "image",
                                      "tool_call", "documents"]

    public let source: String
    public let family: Family
    /// The template writes `{{ bos_token }}` itself.
    public let writesBOSToken: Bool

    /// Recognises the template or throws `TokenizerError.chatTemplate` naming why not.
    public init(source: String) throws {
        self.source = source
        family = try ChatTemplate.detect(source)
        writesBOSToken = source.contains("bos_token")
    }

    static func detect(_ s: String) throws -> Family {
        func fail(_ why: String) -> TokenizerError {
            .chatTemplate("unsupported template: \(why). Supported: the MobileMoE format (<|header_start|>role<|header_end|>\\n\\ncontent<|eot|>) " +
                          "and the Llama 3 format (<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>)")
        }
        let isMobileMoE = mobileMoEMarkers.all.allSatisfy(s.contains)
        let isLlama3 = llama3Markers.all.allSatisfy(s.contains)
        guard isMobileMoE != isLlama3 else {
            throw fail(isMobileMoE ? "it mixes the MobileMoE and Llama 3 header tokens" : "no <|header_start|>/<|header_end|>/<|eot|> or <|start_header_id|>/<|end_header_id|>/<|eot_id|> tokens")
        }
        for feature in unsupportedFeatures where s.contains(feature) {
            throw fail("the template uses '\(feature)', beyond the supported subset")
        }
        guard s.contains("add_generation_prompt"), s.contains("assistant") else {
            throw fail("no add_generation_prompt branch for the assistant's reply")
        }
        let trims = s.range(of: #"content'?\]?\s*\|\s*trim"#, options: .regularExpression) != nil
        return isMobileMoE ? .mobileMoE(trimsContent: trims) : .llama3(trimsContent: trims)
    }

    /// The prompt text; `bosToken` is written only when the template writes `bos_token`.
    public func render(_ messages: [ChatMessage], bosToken: String?, addGenerationPrompt: Bool = true) throws -> String {
        let m = family.markers
        var out = writesBOSToken ? (bosToken ?? "") : ""
        for message in messages {
            let content = family.trimsContent ? message.content.trimmingCharacters(in: .whitespacesAndNewlines) : message.content
            out += m.headerStart + message.role.rawValue + m.headerEnd + "\n\n" + content + m.endOfTurn
        }
        if addGenerationPrompt { out += m.headerStart + "assistant" + m.headerEnd + "\n\n" }
        return out
    }
}
