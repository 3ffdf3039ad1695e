// Tokenizer parity with Python's `tokenizers` on the fixture table (ids with and without
// special tokens, decodes), streaming decoding that never splits a character, chat template.
import Foundation
import XCTest
@testable import MobileMoEKit

final class TokenizerTests: XCTestCase {
    static let tokenizer = try! Tokenizer(directory: Fixtures.url("tiny-qat"))

    func testIdsMatchPython() throws {
        let cases = try Fixtures.json("tokenizer-cases.json") as! [[String: Any]]
        XCTAssertGreaterThan(cases.count, 20)
        let tok = Self.tokenizer
        for c in cases {
            let text = c["text"] as! String
            XCTAssertEqual(tok.encode(text, addSpecialTokens: true), c["ids"] as! [Int], "ids of \(text.debugDescription)")
            XCTAssertEqual(tok.encode(text, addSpecialTokens: false), c["ids_no_special"] as! [Int], "ids of \(text.debugDescription)")
            let ids = c["ids"] as! [Int]
            XCTAssertEqual(tok.decode(ids), c["decoded"] as! String, "decode of \(text.debugDescription)")
            XCTAssertEqual(tok.decode(ids, skipSpecialTokens: false), c["decoded_with_special"] as! String)
        }
    }

    func testFuzzedIdsMatchPython() throws {
        // 300 random mixes of scripts, emoji, odd whitespace, contractions, symbols and special tokens.
        let cases = try Fixtures.json("tokenizer-fuzz.json") as! [[Any]]
        XCTAssertEqual(cases.count, 300)
        for c in cases {
            let text = c[0] as! String
            XCTAssertEqual(Self.tokenizer.encode(text), c[1] as! [Int], text.debugDescription)
        }
    }

    func testSentencepieceExportsMatchPython() throws {
        // A sentencepiece BPE model (byte fallback) as Llama 2's tokenizer.json shape (Prepend/
        // Replace normalizers, Strip decoder) and as a Metaspace pre-tokenizer/decoder export.
        let all = try Fixtures.json("tokenizer-spm-cases.json") as! [String: [[Any]]]
        XCTAssertEqual(Set(all.keys), ["spm-llama2", "spm-metaspace"])
        for (name, rows) in all {
            let tok = try Tokenizer(directory: Fixtures.url(name))
            XCTAssertGreaterThan(rows.count, 150)
            for r in rows {
                let text = r[0] as! String, ids = r[1] as! [Int]
                XCTAssertEqual(tok.encode(text), ids, "\(name) ids of \(text.debugDescription)")
                XCTAssertEqual(tok.decode(ids), r[2] as! String, "\(name) decode of \(text.debugDescription)")
                XCTAssertEqual(tok.decode(ids, skipSpecialTokens: false), r[3] as! String, "\(name) decode with special")
                // Streaming yields the same text, chunk by chunk.
                var stream = StreamingDecoder(tokenizer: tok)
                let streamed = ids.map { stream.append($0) }.joined() + stream.finish()
                XCTAssertEqual(streamed, r[2] as! String, "\(name) streamed \(text.debugDescription)")
            }
        }
    }

    func testStreamingNeverBreaksCharacters() {
        let tok = Self.tokenizer
        let text = "日本語 😀🎉👍🏽 Héllo 🧑‍🚀 中文"
        let ids = tok.encode(text, addSpecialTokens: false)
        var decoder = StreamingDecoder(tokenizer: tok)
        var chunks: [String] = []
        for id in ids { chunks.append(decoder.append(id)) }
        chunks.append(decoder.finish())
        XCTAssertEqual(chunks.joined(), text)
        for chunk in chunks { XCTAssertFalse(chunk.contains("\u{FFFD}"), "chunk \(chunk.debugDescription)") }
        // Some token must have ended mid-character for this test to mean anything.
        XCTAssertTrue(ids.contains { String(decoding: tok.bytes(of: $0), as: UTF8.self).contains("\u{FFFD}") })
    }

    func testStreamingByteByByte() {
        var decoder = StreamingDecoder(tokenizer: Self.tokenizer)
        let text = "aé中😀z"
        var out = ""
        for b in text.utf8 { out += decoder.append(bytes: [b]) }
        XCTAssertEqual(out + decoder.finish(), text)
        // Invalid bytes become U+FFFD and are not held back forever.
        var bad = StreamingDecoder(tokenizer: Self.tokenizer)
        XCTAssertEqual(bad.append(bytes: [0xFF, 0x41]), "\u{FFFD}A")
        XCTAssertEqual(bad.append(bytes: [0xE4, 0xB8]), "")
        XCTAssertEqual(bad.finish(), "\u{FFFD}")
    }

    func testChatTemplateMatchesPython() throws {
        let expected = try Fixtures.json("tiny-qat-expected.json") as! [String: Any]
        let cases = expected["cases"] as! [[String: Any]]
        let chat = cases.first { $0["messages"] is [[String: String]] }!
        let messages = (chat["messages"] as! [[String: String]]).map {
            ChatMessage(role: ChatMessage.Role(rawValue: $0["role"]!)!, content: $0["content"]!)
        }
        // Our checkpoints keep the template in tokenizer_config.json.
        let template = try XCTUnwrap(Self.tokenizer.chatTemplate)
        XCTAssertEqual(template.family, .llama3(trimsContent: false))
        let rendered = try template.render(messages, bosToken: Self.tokenizer.bosToken)
        XCTAssertEqual(rendered, chat["rendered"] as! String)
        XCTAssertEqual(Self.tokenizer.encode(rendered, addSpecialTokens: false), chat["prompt_ids"] as! [Int])
    }

    func testChatTemplateFamilies() throws {
        let llama3Official = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
        let t = try ChatTemplate(source: llama3Official)
        XCTAssertEqual(t.family, .llama3(trimsContent: true))
        XCTAssertEqual(try t.render([.user("  hi \n")], bosToken: "<s>", addGenerationPrompt: false),
                       "<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>")
        // The released MobileMoE (Llama 4 style) format: no trim, no BOS in the template itself.
        let released = Self.mobileMoETemplate
        let m = try ChatTemplate(source: released)
        XCTAssertEqual(m.family, .mobileMoE(trimsContent: false))
        XCTAssertFalse(m.writesBOSToken)
        XCTAssertEqual(try m.render([.system("Be brief."), .user(" hi ")], bosToken: "<s>"),
                       "<|header_start|>system<|header_end|>\n\nBe brief.<|eot|><|header_start|>user<|header_end|>\n\n hi <|eot|><|header_start|>assistant<|header_end|>\n\n")
        // Refused when loaded, naming why.
        let chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        for (name, source) in [("chatml", chatml), ("tools", llama3Official + "{% if tools is not none %}{{ tools }}{% endif %}"),
                               ("mixed", released + "<|eot_id|><|start_header_id|><|end_header_id|>"),
                               ("no generation prompt", "{% for message in messages %}<|header_start|>{{ message['role'] }}<|header_end|>{{ message['content'] }}<|eot|>{% endfor %}")] {
            XCTAssertThrowsError(try ChatTemplate(source: source), name) { error in
                XCTAssertTrue("\(error)".contains("unsupported template"), "\(name): \(error)")
            }
        }
    }

    /// The released format as the Java port renders it (ChatTemplate.renderMobileMoe).
    static let mobileMoETemplate = "{% for message in messages %}{{ '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' + message['content'] + '<|eot|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|header_start|>assistant<|header_end|>\\n\\n' }}{% endif %}"

    /// The fixture tokenizer with the MobileMoE header tokens added (ids 320...322).
    static func mobileMoETokenizer(config: [String: Any]) throws -> Tokenizer {
        var json = try Fixtures.json("tiny-qat/tokenizer.json") as! [String: Any]
        var added = json["added_tokens"] as! [[String: Any]]
        for (i, t) in ["<|header_start|>", "<|header_end|>", "<|eot|>"].enumerated() {
            added.append(["id": 320 + i, "content": t, "special": true, "lstrip": false, "rstrip": false, "single_word": false, "normalized": false])
        }
        json["added_tokens"] = added
        let parse = { (o: Any) in try JSONValue.parse(JSONSerialization.data(withJSONObject: o)) }
        return try Tokenizer(tokenizerJSON: parse(json), tokenizerConfig: parse(config))
    }

    func testMobileMoEPromptIdsAndBOS() throws {
        let base: [String: Any] = ["bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "chat_template": Self.mobileMoETemplate]
        // add_bos_token: BOS first (the template has none); header/eot are single ids.
        var withBOS = base
        withBOS["add_bos_token"] = true
        let tok = try Self.mobileMoETokenizer(config: withBOS)
        let template = try XCTUnwrap(tok.chatTemplate)
        let bos = try XCTUnwrap(tok.tokenId("<|begin_of_text|>"))
        let ids = try tok.chatPromptIds([.user("hi")], template: template)
        let hi = tok.encode("hi", addSpecialTokens: false)
        XCTAssertEqual(ids, [bos, 320] + tok.encode("user", addSpecialTokens: false) + [321] + tok.encode("\n\n", addSpecialTokens: false)
                       + hi + [322, 320] + tok.encode("assistant", addSpecialTokens: false) + [321] + tok.encode("\n\n", addSpecialTokens: false))
        XCTAssertEqual(tok.encode("hi"), [bos] + hi, "add_bos_token also rules encode(), as in transformers")
        // add_bos_token false: no BOS anywhere.
        var noBOS = base
        noBOS["add_bos_token"] = false
        let plain = try Self.mobileMoETokenizer(config: noBOS)
        XCTAssertEqual(try plain.chatPromptIds([.user("hi")], template: template).first, 320)
        XCTAssertEqual(plain.encode("hi"), hi)
        // A template that writes bos_token itself gets exactly one BOS.
        var own = withBOS
        own["chat_template"] = "{{ bos_token }}" + Self.mobileMoETemplate
        let once = try Self.mobileMoETokenizer(config: own)
        let onceIds = try once.chatPromptIds([.user("hi")], template: XCTUnwrap(once.chatTemplate))
        XCTAssertEqual(Array(onceIds.prefix(2)), [bos, 320])
    }

    func testTemplateErrorsAtLoad() throws {
        // The fixture tokenizer has no <|header_start|>: the released template cannot be tokenized with it.
        let tokJSON = try JSONValue.parse(Data(contentsOf: Fixtures.url("tiny-qat/tokenizer.json")))
        let parse = { (o: Any) in try JSONValue.parse(JSONSerialization.data(withJSONObject: o)) }
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: tokJSON, tokenizerConfig: parse(["chat_template": Self.mobileMoETemplate]))) {
            XCTAssertTrue("\($0)".contains("<|header_start|> is not an added token"), "\($0)")
        }
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: tokJSON, tokenizerConfig: parse(["chat_template": "{{ messages }}"])))
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: tokJSON, tokenizerConfig: parse(["bos_token": "<|nope|>"])))
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: tokJSON, tokenizerConfig: parse(["add_bos_token": "yes"])))
        // chat_template.jinja wins over tokenizer_config.json, as in transformers.
        let dir = try temporaryDirectory(self)
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-qat/\(f)"), to: dir.appendingPathComponent(f))
        }
        try Data("{% for message in messages %}{{ message['content'] }}{% endfor %}".utf8).write(to: dir.appendingPathComponent("chat_template.jinja"))
        XCTAssertThrowsError(try Tokenizer(directory: dir)) { XCTAssertTrue("\($0)".contains("unsupported template"), "\($0)") }
        try Data([0x7B, 0xFF, 0x7D]).write(to: dir.appendingPathComponent("chat_template.jinja"))
        XCTAssertThrowsError(try Tokenizer(directory: dir)) { XCTAssertTrue("\($0)".contains("UTF-8"), "\($0)") }
    }

    func testRegexWhitespaceRewrite() throws {
        // \s must also match U+000B and U+0085 (Oniguruma's White_Space), as in tokenizers.
        let re = try PreTokenizer.regex(#"\s+|[^\s]+"#)
        XCTAssertEqual(PreTokenizer.split("a\u{0B}\u{85}b", re, keepMatches: true), ["a", "\u{0B}\u{85}", "b"])
        let escaped = try PreTokenizer.regex(#"\\s"#)  // a literal backslash then 's' stays so
        XCTAssertEqual(PreTokenizer.split(#"x\sy"#, escaped, keepMatches: true), ["x", #"\s"#, "y"])
    }
}

final class DefaultModelTokenizerTests: XCTestCase {
    // The Python package's bundled model (mlx_mobilemoe/default_model): its tokenizer uses a
    // pre-tokenizer split of its own (newlines kept apart from punctuation), read from the file.
    func testBundledModelTokenizerMatchesPython() throws {
        let repo = Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let tok = try Tokenizer(directory: repo.appendingPathComponent("mlx_mobilemoe/default_model"))
        let rows = try Fixtures.json("tokenizer-default-model.json") as! [[Any]]
        XCTAssertGreaterThan(rows.count, 300)
        for r in rows {
            let text = r[0] as! String, ids = r[1] as! [Int]
            XCTAssertEqual(tok.encode(text), ids, "ids of \(text.debugDescription)")
            XCTAssertEqual(tok.decode(ids), r[2] as! String, "decode of \(text.debugDescription)")
        }
    }
}
