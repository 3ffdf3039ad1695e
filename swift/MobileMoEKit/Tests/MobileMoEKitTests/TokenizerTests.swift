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
        // The contract keeps the template in tokenizer_config.json (chat_template.jinja is the fallback).
        let template = try XCTUnwrap(Self.tokenizer.chatTemplate ?? MobileMoEModel.templateFile(in: Fixtures.url("tiny-qat")))
        XCTAssertEqual(template.family, .llama3(trimsContent: false))
        let rendered = try template.render(messages, bosToken: Self.tokenizer.bosToken)
        XCTAssertEqual(rendered, chat["rendered"] as! String)
        XCTAssertEqual(Self.tokenizer.encode(rendered, addSpecialTokens: false), chat["prompt_ids"] as! [Int])
    }

    func testChatTemplateFamilies() {
        let llama3Official = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
        let t = ChatTemplate(source: llama3Official)
        XCTAssertEqual(t.family, .llama3(trimsContent: true))
        XCTAssertEqual(try t.render([.user("  hi \n")], bosToken: "<s>", addGenerationPrompt: false),
                       "<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>")
        let chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        XCTAssertThrowsError(try ChatTemplate(source: chatml).render([.user("x")], bosToken: nil)) { error in
            XCTAssertTrue("\(error)".contains("unsupported template"))
        }
        let withTools = llama3Official + "{% if tools is not none %}{{ tools }}{% endif %}"
        XCTAssertThrowsError(try ChatTemplate(source: withTools).render([.user("x")], bosToken: nil))
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
