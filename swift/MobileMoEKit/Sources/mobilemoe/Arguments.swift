// Command-line options of `mobilemoe` (no ArgumentParser: the package has no dependencies).
import Foundation
import MobileMoEKit

struct Arguments {
    var model: String?
    var prompt: String?
    var system: String?
    var raw = false
    var backend = BackendChoice.automatic
    var parameters = GenerateParameters()

    static let usage = """
    usage: mobilemoe [--model DIR] [--prompt TEXT] [--max-tokens N] [--temperature T] [--top-p P]
                     [--top-k K] [--seed S] [--experts-per-token K] [--system TEXT] [--raw]
                     [--backend automatic|cpu|metal]

    Streams text from a MobileMoE checkpoint folder (config.json, model.safetensors, tokenizer.json).
    --model defaults to mlx_mobilemoe/default_model under the current directory.
    Without --prompt: an interactive chat (one message per line, Ctrl-D to quit).
    --raw feeds the prompt as plain text instead of through the chat template.
    --temperature 0 is greedy. Timings go to stderr.
    """

    struct Failure: Error, CustomStringConvertible { let description: String }

    init(_ args: [String]) throws {
        var it = args.makeIterator()
        func value(_ flag: String) throws -> String {
            guard let v = it.next() else { throw Failure(description: "\(flag) needs a value") }
            return v
        }
        func number<T: LosslessStringConvertible>(_ flag: String, _: T.Type) throws -> T {
            let v = try value(flag)
            guard let n = T(v) else { throw Failure(description: "\(flag): '\(v)' is not a valid number") }
            return n
        }
        while let a = it.next() {
            switch a {
            case "--model": model = try value(a)
            case "--prompt", "-p": prompt = try value(a)
            case "--system": system = try value(a)
            case "--raw": raw = true
            case "--max-tokens", "-n":
                let n = try number(a, Int.self)
                guard n >= 1 else { throw Failure(description: "\(a) must be at least 1, got \(n)") }
                parameters.maxTokens = n
            case "--temperature", "--temp": parameters.temperature = try number(a, Float.self)
            case "--top-p": parameters.topP = try number(a, Float.self)
            case "--top-k": parameters.topK = try number(a, Int.self)
            case "--seed": parameters.seed = try number(a, UInt64.self)
            case "--experts-per-token": parameters.expertsPerToken = try number(a, Int.self)
            case "--backend":
                let v = try value(a)
                guard let b = BackendChoice(rawValue: v) else { throw Failure(description: "--backend: '\(v)' is not automatic, cpu or metal") }
                backend = b
            case "--help", "-h": throw Failure(description: Arguments.usage)
            default: throw Failure(description: "unknown option '\(a)'\n\n\(Arguments.usage)")
            }
        }
    }

    /// --model, else the bundled default model of the Python package.
    func modelDirectory() throws -> URL {
        if let m = model { return URL(fileURLWithPath: (m as NSString).expandingTildeInPath) }
        let bundled = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("mlx_mobilemoe/default_model")
        guard FileManager.default.fileExists(atPath: bundled.appendingPathComponent("config.json").path) else {
            throw Failure(description: "no --model given and no default model at \(bundled.path)")
        }
        return bundled
    }
}
