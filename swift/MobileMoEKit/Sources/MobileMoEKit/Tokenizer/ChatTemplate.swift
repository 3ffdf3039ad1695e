// The chat-template subset rendered natively (no Jinja engine): the Llama 3 family,
//   {{ bos_token }} + for each message
//   <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
//   + (add_generation_prompt) <|start_header_id|>assistant<|end_header_id|>\n\n
// with `content | trim` when the template trims. Templates that inject tools or dates
// (Llama 3.1+ system preambles) or use any other format are refused with a clear error.
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
    public enum Family: Sendable, Equatable { case llama3(trimsContent: Bool), unsupported(String) }

    public let source: String
    public let family: Family

    public init(source: String) {
        self.source = source
        family = ChatTemplate.detect(source)
    }

    static func detect(_ s: String) -> Family {
        let markers = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        guard markers.allSatisfy(s.contains) else {
            return .unsupported("not a Llama 3 style template (no <|start_header_id|>/<|end_header_id|>/<|eot_id|>)")
        }
        for feature in ["tools", "Cutting Knowledge", "strftime", "date_string", "ipython", "image"] where s.contains(feature) {
            return .unsupported("the template uses '\(feature)', beyond the supported Llama 3 subset")
        }
        guard s.contains("bos_token") else { return .unsupported("the template does not start with bos_token") }
        let trims = s.range(of: #"content'?\]?\s*\|\s*trim"#, options: .regularExpression) != nil
        return .llama3(trimsContent: trims)
    }

    public func render(_ messages: [ChatMessage], bosToken: String?, addGenerationPrompt: Bool = true) throws -> String {
        guard case let .llama3(trims) = family else {
            if case let .unsupported(why) = family { throw TokenizerError.chatTemplate("unsupported template: \(why). Supported: the Llama 3 format ({{ bos_token }}, <|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>).") }
            return ""
        }
        var out = bosToken ?? ""
        for m in messages {
            let content = trims ? m.content.trimmingCharacters(in: .whitespacesAndNewlines) : m.content
            out += "<|start_header_id|>\(m.role.rawValue)<|end_header_id|>\n\n\(content)<|eot_id|>"
        }
        if addGenerationPrompt { out += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        return out
    }
}
