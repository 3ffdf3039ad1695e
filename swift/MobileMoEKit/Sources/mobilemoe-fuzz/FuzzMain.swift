// `mobilemoe-fuzz`: the loader fuzz driver (issue 11). Each case copies a seed checkpoint
// folder, mutates one of its files (config.json, tokenizer files, generation_config.json,
// chat_template.jinja, safetensors header/bytes, the shard index) or swaps it for a FIFO,
// directory or /dev/zero, then loads it in a child process of its own and, when it loads,
// generates two tokens from text, token and chat prompts. A trap (signal) or a hang in the
// child is counted, never fatal to the run. Counts go to stdout as JSON.
//
//   swift run -c release mobilemoe-fuzz --cases 20000 --jobs 2      (from the repository root)
//   mobilemoe-fuzz --only 1234 --keep /tmp/case                     (re-create one case)
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import MobileMoEKit

@main
struct FuzzMain {
    static func main() async {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "--load", args.count == 2 {
            await child(URL(fileURLWithPath: args[1]))
        }
        do {
            let options = try Options(args)
            let fuzzer = try Fuzzer(options)
            if let out = options.writeSeeds {
                // The derived seed folders, to look at or to load with `--load`.
                try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
                for s in fuzzer.seeds.dropFirst(options.seedDirs.count) {
                    try FileManager.default.copyItem(at: s, to: out.appendingPathComponent(s.lastPathComponent))
                }
                fuzzer.removeWorkFolder()
                exit(0)
            }
            let summary = try fuzzer.run()
            fuzzer.removeWorkFolder()
            print(summary)
            exit(0)
        } catch {
            FileHandle.standardError.write("mobilemoe-fuzz: \(error)\n".data(using: .utf8)!)
            exit(2)
        }
    }

    /// The child: load the folder, generate a little; exit 0 (ok), 3 (a named error of the
    /// package) or 4 (any other error). Traps end it with a signal.
    static func child(_ dir: URL) async -> Never {
        do {
            let model = try MobileMoEModel(directory: dir, backend: .cpu, adaptiveCompute: .disabled, deviceState: FixedDeviceState())
            var prompts: [Prompt] = [.text("Hi there, é😀"), .tokens([0])]
            if model.chatTemplate != nil { prompts.append(.chat([.system("Be brief."), .user("héllo <|eot|> 😀")])) }
            for (i, p) in prompts.enumerated() {
                let parameters = GenerateParameters(maxTokens: 2, temperature: i == 0 ? 0 : 0.8, topP: 0.9, topK: 5, seed: 1)
                for try await _ in model.generate(p, parameters: parameters) {}
            }
            print("ok")
            exit(0)
        } catch {
            let type = String(describing: Swift.type(of: error))
            let named = error is ConfigError || error is SafeTensorsError || error is TokenizerError || error is CheckpointError
                || error is FileAccessError || error is MappedFileError || error is InferenceError
            print("\(named ? "named" : "unexpected") \(type): \(error)")
            exit(named ? 3 : 4)
        }
    }
}

struct Options {
    var cases = 200
    var seed: UInt64 = 1
    var jobs = 1
    var timeout = 20.0
    var seedDirs: [URL] = []
    var keep: URL? = nil
    var only: Int? = nil
    var progressEvery = 0
    var writeSeeds: URL? = nil

    init(_ args: [String]) throws {
        var it = args.makeIterator()
        func value(_ flag: String) throws -> String {
            guard let v = it.next() else { throw FuzzError("\(flag) needs a value") }
            return v
        }
        func number<T: LosslessStringConvertible>(_ flag: String) throws -> T {
            let v = try value(flag)
            guard let n = T(v) else { throw FuzzError("\(flag): '\(v)' is not a number") }
            return n
        }
        while let a = it.next() {
            switch a {
            case "--cases": cases = try number(a)
            case "--seed": seed = try number(a)
            case "--jobs": jobs = try number(a)
            case "--timeout": timeout = try number(a)
            case "--seed-dir": seedDirs.append(URL(fileURLWithPath: try value(a)))
            case "--keep": keep = URL(fileURLWithPath: try value(a))
            case "--only": only = try number(a)
            case "--progress": progressEvery = try number(a)
            case "--write-seeds": writeSeeds = URL(fileURLWithPath: try value(a))
            default:
                throw FuzzError("unknown option \(a); usage: mobilemoe-fuzz [--cases N] [--seed S] [--jobs J] [--timeout SEC] [--seed-dir DIR]... [--keep DIR] [--only K] [--progress N] [--write-seeds DIR]")
            }
        }
        guard cases >= 0, jobs >= 1, timeout > 0 else { throw FuzzError("--cases >= 0, --jobs >= 1, --timeout > 0") }
        if seedDirs.isEmpty {
            // The package's test fixtures, from the repository root.
            let fixtures = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
                .appendingPathComponent("swift/MobileMoEKit/Tests/MobileMoEKitTests/Fixtures")
            seedDirs = ["tiny-qat", "tiny-bf16"].map { fixtures.appendingPathComponent($0) }
        }
        for d in seedDirs where !FileManager.default.fileExists(atPath: d.appendingPathComponent("config.json").path) {
            throw FuzzError("seed folder \(d.path) has no config.json (run from the repository root or pass --seed-dir)")
        }
    }
}

enum Outcome: String, CaseIterable {
    case ok, named_error, unexpected_error, trap, hang, harness_error
}

final class Fuzzer: @unchecked Sendable {
    let options: Options
    let work: URL
    var seeds: [URL] = []
    private let lock = NSLock()
    private var counts: [Outcome: Int] = [:]
    private var byTarget: [String: [Outcome: Int]] = [:]
    private var errorTypes: [String: Int] = [:]
    private var examples: [[String: String]] = []
    private var done = 0

    init(_ options: Options) throws {
        self.options = options
        work = FileManager.default.temporaryDirectory.appendingPathComponent("mobilemoe-fuzz-\(getpid())")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        seeds = options.seedDirs
        // A sharded variant of the first seed, so the index and multi-file paths are fuzzed too.
        let sharded = work.appendingPathComponent("seed-sharded")
        try Fuzzer.shard(options.seedDirs[0], into: sharded)
        seeds.append(sharded)
        // ... and one in the released layout's style (config keys, chat format, special tokens).
        let released = work.appendingPathComponent("seed-released-style")
        try Fuzzer.releasedStyle(options.seedDirs[0], into: released)
        seeds.append(released)
    }

    /// Copies a tiny fixture checkpoint (Llama 3 special tokens at ids 0...5) and gives it what
    /// a released MobileMoE folder has: the released config keys, generation_config.json, the
    /// Llama 4 header tokens (<|header_start|>, <|header_end|>, <|eot|> on ids 2...4), the
    /// released chat template with add_bos_token. Small, so thousands of cases stay fast.
    static func releasedStyle(_ seed: URL, into dir: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        try fm.copyItem(at: seed.appendingPathComponent("model.safetensors"), to: dir.appendingPathComponent("model.safetensors"))
        func load(_ name: String) throws -> [String: JSONValue] {
            guard let o = try JSONValue.parse(Data(contentsOf: seed.appendingPathComponent(name))).object else { throw FuzzError("\(name) is not an object") }
            return o
        }
        func save(_ o: [String: JSONValue], _ name: String) throws { try Data(jsonText(.object(o)).utf8).write(to: dir.appendingPathComponent(name)) }

        var config = try load("config.json")
        let layers = config["num_hidden_layers"]?.int ?? 2
        let extra: [String: JSONValue] = [
            "architectures": .array([.string("MobileMoEForCausalLM")]), "model_type": .string("mobilemoe"),
            "auto_map": .object(["AutoConfig": .string("configuration_mobilemoe.MobileMoEConfig")]),
            "transformers_version": .string("4.57.1"), "hidden_act": .string("silu"),
            "attn_temperature_tuning": .bool(false), "torch_dtype": .string("bfloat16"), "attention_bias": .bool(false),
            "attention_dropout": .number(0), "routed_scaling_factor": .number(2.5), "interleave_moe_layer_step": .integer(1),
            "layer_types": .array(Array(repeating: .string("full_attention"), count: layers)),
            "eos_token_id": .array([.integer(1), .integer(4)]), "bos_token_id": .integer(0)]
        config.merge(extra) { _, b in b }
        if var q = config["quantization"]?.object {
            q["linear_group_axis"] = .string("in (last dim of [out, in])")
            q["expert_group_axis"] = .string("out (last dim of [E, in, out])")
            config["quantization"] = .object(q)
        }
        try save(config, "config.json")
        try save(["bos_token_id": .integer(0), "eos_token_id": .array([.integer(1), .integer(3), .integer(4)])], "generation_config.json")

        let rename = ["<|start_header_id|>": "<|header_start|>", "<|end_header_id|>": "<|header_end|>", "<|eot_id|>": "<|eot|>"]
        var tok = try load("tokenizer.json")
        tok["added_tokens"] = .array((tok["added_tokens"]?.array ?? []).map { t in
            guard var o = t.object, let c = o["content"]?.string, let r = rename[c] else { return t }
            o["content"] = .string(r)
            return .object(o)
        })
        if var model = tok["model"]?.object, var vocab = model["vocab"]?.object {
            for (old, new) in rename { if let id = vocab.removeValue(forKey: old) { vocab[new] = id } }
            model["vocab"] = .object(vocab)
            tok["model"] = .object(model)
        }
        try save(tok, "tokenizer.json")
        let template = "{{- bos_token }}{%- for message in messages %}{{- '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' }}"
            + "{%- if message['content'] is string %}{{- message['content'] }}{%- else %}{%- for part in message['content'] %}"
            + "{%- if part['type'] == 'text' %}{{- part['text'] }}{%- endif %}{%- endfor %}{%- endif %}{{- '<|eot|>' }}{%- endfor %}"
            + "{%- if add_generation_prompt %}{{- '<|header_start|>assistant<|header_end|>\\n\\n' }}{%- endif %}"
        try save(["bos_token": .string("<|begin_of_text|>"), "eos_token": .string("<|eot|>"), "add_bos_token": .bool(true),
                  "add_eos_token": .bool(false), "chat_template": .string(template), "clean_up_tokenization_spaces": .bool(true)],
                 "tokenizer_config.json")
    }

    /// `exit` skips deinitializers: callers remove the scratch folder explicitly.
    func removeWorkFolder() { try? FileManager.default.removeItem(at: work) }

    /// Copies `seed` with its weights split into two shards and a model.safetensors.index.json.
    static func shard(_ seed: URL, into dir: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        for f in try fm.contentsOfDirectory(atPath: seed.path) where f != "model.safetensors" {
            try fm.copyItem(at: seed.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        let file = try Data(contentsOf: seed.appendingPathComponent("model.safetensors"))
        guard let parts = SafeTensorsParts(file), let entries = parts.header.object else { throw FuzzError("seed weights unreadable") }
        let names = entries.keys.filter { $0 != "__metadata__" }.sorted()
        var map: [String: JSONValue] = [:]
        for (s, group) in [names.enumerated().filter { $0.offset % 2 == 0 }, names.enumerated().filter { $0.offset % 2 == 1 }].enumerated() {
            var header: [String: JSONValue] = [:]
            var data = Data()
            for (_, name) in group {
                let e = entries[name]!
                guard let off = e["data_offsets"]?.array, let b = off[0].int, let en = off[1].int else { throw FuzzError("bad seed entry") }
                header[name] = .object(["dtype": e["dtype"]!, "shape": e["shape"]!,
                                        "data_offsets": .array([.integer(data.count), .integer(data.count + en - b)])])
                data.append(parts.data.subdata(in: b..<en))
                map[name] = .string("model-0000\(s + 1)-of-00002.safetensors")
            }
            try SafeTensorsParts.assemble(headerText: jsonText(.object(header)), data: data)
                .write(to: dir.appendingPathComponent("model-0000\(s + 1)-of-00002.safetensors"))
        }
        try Data(jsonText(.object(["metadata": .object([:]), "weight_map": .object(map)])).utf8)
            .write(to: dir.appendingPathComponent("model.safetensors.index.json"))
    }

    /// Builds case `k` in `dir`; returns (target file, description).
    func makeCase(_ k: Int, in dir: URL) throws -> (String, String) {
        var rng = Rng(options.seed &* 0x1000_0000_01B3 &+ UInt64(k))
        let seed = rng.pick(seeds)
        let fm = FileManager.default
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        let files = try fm.contentsOfDirectory(atPath: seed.path).sorted()
        for f in files { try fm.linkItem(at: seed.appendingPathComponent(f), to: dir.appendingPathComponent(f)) }
        // Optional files that a checkpoint may carry.
        let extras = ["generation_config.json", "chat_template.jinja"]
        let target = rng.chance(0.1) ? rng.pick(extras) : rng.pick(files)
        let url = dir.appendingPathComponent(target)
        var original: Data
        if fm.fileExists(atPath: url.path) {
            original = try Data(contentsOf: url)
        } else if target == "generation_config.json" {
            original = Data(#"{"bos_token_id": 0, "eos_token_id": [1, 4], "do_sample": true, "temperature": 0.6}"#.utf8)
        } else {
            original = Data(rng.pick([
                "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
                "{% for message in messages %}{{ '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' + message['content'] + '<|eot|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|header_start|>assistant<|header_end|>\\n\\n' }}{% endif %}",
            ]).utf8)
        }
        var what: String
        if rng.chance(0.04) {
            what = try swapFileKind(url.path, &rng)
        } else {
            var data = original
            what = ""
            for step in 0..<(rng.chance(0.25) ? 2 + rng.int(3) : 1) {
                let d: Data, w: String
                if target.hasSuffix(".safetensors") {
                    (d, w) = mutateSafeTensors(data, &rng)
                } else if target.hasSuffix(".json"), rng.chance(0.75), let tree = try? JSONValue.parse(data) {
                    let (text, tw) = mutateJSON(tree, &rng)
                    (d, w) = (Data(text.utf8), tw)
                } else if target == "chat_template.jinja" || target == "tokenizer_config.json", rng.chance(0.3) {
                    (d, w) = (mutateTemplate(data, &rng), "template text")
                } else {
                    (d, w) = mutateBytes(data, &rng)
                }
                data = d
                what += (step > 0 ? "; " : "") + w
            }
            try? fm.removeItem(at: url)  // a hard link to the seed: never write through it
            try data.write(to: url)
        }
        return ("\(seed.lastPathComponent)/\(target)", what)
    }

    /// Chat-template edits that keep it a JSON string in tokenizer_config.json.
    func mutateTemplate(_ data: Data, _ rng: inout Rng) -> Data {
        let edits = ["<|eot|>", "<|header_start|>", "{{ bos_token }}", "{% if tools %}{{ tools }}{% endif %}", "| trim",
                     "<|start_header_id|>", "{{ raise_exception('no') }}", String(repeating: "{{ x }}", count: 10_000), "\u{FFFD}"]
        let insert = rng.pick(edits)
        if var tree = try? JSONValue.parse(data), case var .object(o) = tree {
            var t = o["chat_template"]?.string ?? ""
            let i = t.index(t.startIndex, offsetBy: rng.int(t.count + 1))
            t.insert(contentsOf: insert, at: i)
            o["chat_template"] = .string(t)
            tree = .object(o)
            return Data(jsonText(tree).utf8)
        }
        var s = String(decoding: data, as: UTF8.self)
        s.insert(contentsOf: insert, at: s.index(s.startIndex, offsetBy: rng.int(s.count + 1)))
        return Data(s.utf8)
    }

    /// Runs one case in a child process with a deadline.
    func runCase(_ k: Int) -> (Outcome, String, String, String) {
        let dir = (options.keep ?? work).appendingPathComponent("case-\(k)")
        let target: String, what: String
        do { (target, what) = try makeCase(k, in: dir) } catch { return (.harness_error, "?", "\(error)", "") }
        defer { if options.keep == nil { try? FileManager.default.removeItem(at: dir) } }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        if !FileManager.default.isExecutableFile(atPath: p.executableURL!.path) {
            p.executableURL = Bundle.main.executableURL
        }
        p.arguments = ["--load", dir.path]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        let finished = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in finished.signal() }
        do { try p.run() } catch { return (.harness_error, target, what, "\(error)") }
        // Read while waiting so a chatty child never blocks on a full pipe.
        let reader = DispatchQueue.global()
        let outputBox = OutputBox()
        let readDone = DispatchSemaphore(value: 0)
        reader.async {
            outputBox.data = out.fileHandleForReading.readDataToEndOfFile()
            // Close our read end now: left to Foundation it leaked one descriptor per case
            // (measured: +1 open pipe per case), up to the open-file limit (20,000 here).
            try? out.fileHandleForReading.close()
            readDone.signal()
        }
        // Bounded waits only (a --jobs 2 run once stalled here at ~19,500 cases: the read ends
        // leaked, see above, until the open-file limit).
        if finished.wait(timeout: .now() + options.timeout) == .timedOut {
            kill(p.processIdentifier, SIGKILL)
            _ = finished.wait(timeout: .now() + 5)
            _ = readDone.wait(timeout: .now() + 5)
            return (.hang, target, what, "no exit after \(options.timeout) s")
        }
        // EOF comes when every holder of the pipe's write end is gone (a sibling child spawned
        // meanwhile may hold it until it exits): bounded as well.
        if readDone.wait(timeout: .now() + options.timeout + 5) == .timedOut {
            return (.harness_error, target, what, "child output not closed \(options.timeout + 5) s after its exit")
        }
        let line = String(decoding: outputBox.data.prefix(600), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if p.terminationReason == .uncaughtSignal {
            return (.trap, target, what, "signal \(p.terminationStatus)")
        }
        let code = p.terminationStatus
        switch code {
        case 0: return (.ok, target, what, line)
        case 3: return (.named_error, target, what, line)
        case 4: return (.unexpected_error, target, what, line)
        default: return (.trap, target, what, "exit status \(code): \(line)")
        }
    }

    func record(_ k: Int, _ r: (Outcome, String, String, String)) {
        let (outcome, target, what, detail) = r
        lock.lock()
        defer { lock.unlock() }
        counts[outcome, default: 0] += 1
        let file = target.split(separator: "/").last.map(String.init) ?? target
        byTarget[file, default: [:]][outcome, default: 0] += 1
        if outcome == .named_error || outcome == .unexpected_error {
            let type = detail.split(separator: " ").dropFirst().first.map { String($0.dropLast()) } ?? "?"
            errorTypes[type, default: 0] += 1
        }
        if outcome != .ok && outcome != .named_error && examples.count < 40 {
            examples.append(["case": String(k), "outcome": outcome.rawValue, "target": target, "mutation": String(what.prefix(300)), "detail": String(detail.prefix(300))])
        }
        done += 1
        if options.progressEvery > 0 && done % options.progressEvery == 0 {
            let elapsed = Date().timeIntervalSince(started)
            let rate = Double(done) / max(elapsed, 1e-9)
            let eta = Double(options.cases - done) / max(rate, 1e-9)
            let bad = (counts[.trap] ?? 0) + (counts[.hang] ?? 0) + (counts[.unexpected_error] ?? 0)
            FileHandle.standardError.write(String(format: "%d/%d cases, %.1f cases/s, ETA %.0f s, traps+hangs+unexpected %d\n",
                                                  done, options.cases, rate, eta, bad).data(using: .utf8)!)
        }
    }

    var started = Date()

    func run() throws -> String {
        started = Date()
        let indices = options.only.map { [$0] } ?? Array(0..<options.cases)
        let next = Counter()
        DispatchQueue.concurrentPerform(iterations: options.jobs) { _ in
            while let i = next.take(below: indices.count) {
                record(indices[i], runCase(indices[i]))
            }
        }
        let seconds = Date().timeIntervalSince(started)
        var json: [String: Any] = [
            "tool": "mobilemoe-fuzz", "date": ISO8601DateFormatter().string(from: started),
            "seed": options.seed, "cases": indices.count, "seconds": (seconds * 10).rounded() / 10,
            "seeds": seeds.map(\.lastPathComponent),
            "error_types": errorTypes, "examples": examples,
            "by_file": byTarget.mapValues { d in Dictionary(uniqueKeysWithValues: d.map { ($0.key.rawValue, $0.value) }) },
        ]
        for o in Outcome.allCases { json[o.rawValue] = counts[o] ?? 0 }
        let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

final class OutputBox: @unchecked Sendable { var data = Data() }

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var i = 0
    func take(below n: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard i < n else { return nil }
        i += 1
        return i - 1
    }
}
