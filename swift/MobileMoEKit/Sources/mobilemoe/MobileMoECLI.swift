// `mobilemoe`: one-shot generation or a multi-turn chat (ChatSession: the KV cache is kept
// between turns) from a MobileMoE folder, printing which backend runs and tokens/s.
// A thin main over MobileMoEKit: parse, load, stream, print.
import Foundation
import MobileMoEKit

@main
struct MobileMoECLI {
    static func main() async {
        do {
            let args = try Arguments(Array(CommandLine.arguments.dropFirst()))
            let directory = try args.modelDirectory()
            let loadStart = Date()
            let options = LoadOptions(kvCache: args.parameters.kvCache, lifecycle: NoLifecycleEvents())
            let model = try await MobileMoEModel.load(directory: directory, backend: args.backend, options: options)
            let c = model.configuration
            log("loaded \(directory.lastPathComponent): \(c.numHiddenLayers) layers, H \(c.hiddenSize), \(c.numLocalExperts) experts top-\(c.numExpertsPerTok), " +
                "\(c.isQuantized ? "int4 g32" : "bf16") in \(String(format: "%.2f", Date().timeIntervalSince(loadStart))) s")
            log("backend: \(model.backend.name) (requested \(args.backend.rawValue)" +
                (model.backendFallbackReason.map { "; GPU not used: \($0)" } ?? "") + ")")
            if args.chat || args.prompt == nil {
                try await chat(model, args)
            } else if let prompt = args.prompt {
                var messages: [ChatMessage] = args.system.map { [.system($0)] } ?? []
                messages.append(.user(prompt))
                let p: Prompt = args.raw || model.chatTemplate == nil ? .text(prompt) : .chat(messages)
                try await stream(model.generate(p, parameters: args.parameters))
            }
        } catch {
            log("error: \(error)")
            exit(1)
        }
    }

    /// Prints the reply as it arrives, then the rates.
    static func stream(_ events: AsyncThrowingStream<GenerationEvent, Error>) async throws {
        for try await event in events {
            switch event {
            case let .chunk(text):
                print(text, terminator: "")
                fflush(nil)  // all streams (stdout is a C global: not Swift 6 concurrency-safe)
            case let .info(i):
                print("")
                fflush(nil)  // the reply's end before the rates on stderr, also through a pipe
                log(String(format: "prompt: %d tokens (%d cached), %.1f tokens/s | generation: %d tokens, %.1f tokens/s | experts/token %d | %@ | stop: %@",
                           i.promptTokenCount, i.cachedPromptTokenCount, i.promptTokensPerSecond, i.generationTokenCount,
                           i.tokensPerSecond, i.expertsPerToken, i.backend, i.stopReason.rawValue))
            }
        }
    }

    /// A REPL over one ChatSession (raw mode: each line continues one growing text instead).
    static func chat(_ model: MobileMoEModel, _ args: Arguments) async throws {
        guard model.chatTemplate != nil, !args.raw else {
            throw Arguments.Failure(description: "--chat needs a checkpoint with a chat template (and no --raw)")
        }
        let session = ChatSession(model: model, instructions: args.system, parameters: args.parameters)
        var first = args.prompt
        while true {
            let line: String
            if let p = first {
                line = p
                first = nil
                print("> \(p)")
            } else {
                print("> ", terminator: "")
                fflush(nil)  // all streams (stdout is a C global: not Swift 6 concurrency-safe)
                guard let l = readLine() else { break }
                line = l
            }
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            if line == "/reset" {
                await session.reset()
                log("conversation reset")
                continue
            }
            try await stream(session.streamResponse(to: line))
        }
    }

    static func log(_ s: String) {
        FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
    }
}
