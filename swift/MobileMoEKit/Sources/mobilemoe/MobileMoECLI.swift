// `mobilemoe`: one-shot or interactive generation from a MobileMoE folder, printing tokens/s.
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
            let model = try await MobileMoEModel.load(directory: directory, backend: args.backend)
            let c = model.configuration
            log("loaded \(directory.lastPathComponent): \(c.numHiddenLayers) layers, H \(c.hiddenSize), \(c.numLocalExperts) experts top-\(c.numExpertsPerTok), " +
                "\(c.isQuantized ? "int4 g32" : "bf16") on \(model.backend.name) in \(String(format: "%.2f", Date().timeIntervalSince(loadStart))) s")
            if let prompt = args.prompt {
                var messages: [ChatMessage] = args.system.map { [.system($0)] } ?? []
                messages.append(.user(prompt))
                let p: Prompt = args.raw || model.chatTemplate == nil ? .text(prompt) : .chat(messages)
                _ = try await stream(model, p, args.parameters)
            } else {
                try await chat(model, args)
            }
        } catch {
            log("error: \(error)")
            exit(1)
        }
    }

    /// Prints the reply as it arrives; returns its text.
    static func stream(_ model: MobileMoEModel, _ prompt: Prompt, _ parameters: GenerateParameters) async throws -> String {
        var reply = ""
        for try await event in model.generate(prompt, parameters: parameters) {
            switch event {
            case let .chunk(text):
                reply += text
                print(text, terminator: "")
                fflush(stdout)
            case let .info(i):
                print("")
                log(String(format: "prompt: %d tokens, %.1f tokens/s | generation: %d tokens, %.1f tokens/s | experts/token %d | %@ | stop: %@",
                           i.promptTokenCount, i.promptTokensPerSecond, i.generationTokenCount, i.tokensPerSecond,
                           i.expertsPerToken, i.backend, i.stopReason.rawValue))
            }
        }
        return reply
    }

    static func chat(_ model: MobileMoEModel, _ args: Arguments) async throws {
        var history: [ChatMessage] = args.system.map { [.system($0)] } ?? []
        while true {
            print("> ", terminator: "")
            fflush(stdout)
            guard let line = readLine() else { break }
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            history.append(.user(line))
            let p: Prompt = args.raw || model.chatTemplate == nil ? .text(line) : .chat(history)
            history.append(.assistant(try await stream(model, p, args.parameters)))
        }
    }

    static func log(_ s: String) {
        FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
    }
}
