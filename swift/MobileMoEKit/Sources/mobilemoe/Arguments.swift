// Command-line options of `mobilemoe` (no ArgumentParser: the package has no dependencies).
import Foundation
import MobileMoEKit

struct Arguments {
    var model: String?
    var prompt: String?
    var system: String?
    var raw = false
    var chat = false
    var backend = BackendChoice.automatic
    var parameters = GenerateParameters()

    static let usage = """
    usage: mobilemoe [--model DIR] [--prompt TEXT] [--chat] [--max-tokens N] [--temperature T] [--top-p P]
                     [--top-k K] [--min-p P] [--repetition-penalty R] [--presence-penalty P]
                     [--frequency-penalty F] [--stop TEXT]... [--seed S] [--experts-per-token K]
                     [--max-kv-size N] [--kv-cache float32|float16|int8] [--system TEXT] [--raw]
                     [--backend automatic|cpu|gpu]

    Streams text from a MobileMoE checkpoint folder (config.json, model.safetensors, tokenizer.json).
    --model defaults to mlx_mobilemoe/default_model under the current directory.
    --chat (or no --prompt): a multi-turn chat over one session whose KV cache is kept between
    turns (one message per line; /reset starts over; Ctrl-D quits); --prompt is then the first message.
    --raw feeds the prompt as plain text instead of through the chat template.
    --temperature 0 is greedy. The backend that runs, load time and rates go to stderr.
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
            case "--chat": chat = true
            case "--min-p": parameters.minP = try number(a, Float.self)
            case "--repetition-penalty": parameters.repetitionPenalty = try number(a, Float.self)
            case "--presence-penalty": parameters.presencePenalty = try number(a, Float.self)
            case "--frequency-penalty": parameters.frequencyPenalty = try number(a, Float.self)
            case "--stop": parameters.stopStrings.append(try value(a))
            case "--max-kv-size": parameters.maxKVSize = try number(a, Int.self)
            case "--kv-cache":
                let v = try value(a)
                guard let t = KVCacheType(rawValue: v) else { throw Failure(description: "--kv-cache: '\(v)' is not float32, float16 or int8") }
                parameters.kvCache = t
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
                guard let b = v == "metal" ? .gpu : BackendChoice(rawValue: v) else {
                    throw Failure(description: "--backend: '\(v)' is not automatic, cpu or gpu")
                }
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
