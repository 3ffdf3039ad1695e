// Sampler speed at a Llama 3 vocabulary (128,256 logits): milliseconds per token for the
// settings apps use, against the sort-everything reference. Prints JSON. Run in release:
//     swift run -c release mobilemoe-sampler-bench [--iterations N]
import Foundation
import MobileMoEKit

@main
struct SamplerBenchmark {
    static func main() {
        let vocab = 128_256
        var iterations = 200
        var args = CommandLine.arguments.dropFirst().makeIterator()
        while let a = args.next() {
            if a == "--iterations", let v = args.next(), let n = Int(v), n > 0 { iterations = n } else {
                FileHandle.standardError.write(Data("usage: mobilemoe-sampler-bench [--iterations N]\n".utf8))
                exit(2)
            }
        }

        // Logits: a Gaussian body (std 2.5) and a head of 32 likely tokens. "lm-like": the head starts
        // 20 above the mean (~8 sigma, as language-model logits; the top token has about half the
        // mass). "flat": only 10 above, so the body holds most of the mass and top-p keeps tens of
        // thousands of tokens (a worst case).
        var rng = SplitMix64(seed: 2026)
        func gaussian() -> Float {
            let u = max(Double.random(in: 0..<1, using: &rng), 1e-12), v = Double.random(in: 0..<1, using: &rng)
            return Float((-2 * log(u)).squareRoot() * cos(2 * Double.pi * v))
        }
        func table(head: Float) -> [[Float]] {
            (0..<4).map { _ in
                var x = (0..<vocab).map { _ in 2.5 * gaussian() }
                for i in 0..<32 { x[(i * 7919) % vocab] += head - Float(i) * 0.25 }
                return x
            }
        }
        let lmLike = table(head: 20), flat = table(head: 10)
        var tables = lmLike

        /// This thread's CPU time (ns): on a shared, overloaded machine wall time mostly measures
        /// waiting for a core; both are reported.
        func cpuNanoseconds() -> UInt64 {
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        }

        func measure(_ body: ([Float]) -> Int) -> (median: Double, p90: Double, cpuMedian: Double) {
            var times: [Double] = [], cpu: [Double] = []
            var sink = 0
            for i in 0..<(iterations + 5) {
                let logits = tables[i % tables.count]
                let c0 = cpuNanoseconds()
                let t0 = DispatchTime.now().uptimeNanoseconds
                sink &+= body(logits)
                let t1 = DispatchTime.now().uptimeNanoseconds
                let c1 = cpuNanoseconds()
                if i >= 5 {  // 5 warm-up runs
                    times.append(Double(t1 - t0) / 1e6)
                    cpu.append(Double(c1 - c0) / 1e6)
                }
            }
            if sink == -1 { print("") }
            times.sort()
            cpu.sort()
            return (times[times.count / 2], times[min(times.count - 1, times.count * 9 / 10)], cpu[cpu.count / 2])
        }

        func row(_ label: String, _ name: String, _ r: (median: Double, p90: Double, cpuMedian: Double)) -> String {
            "    {\"logits\": \"\(label)\", \"setting\": \"\(name)\", \"ms_median\": \(String(format: "%.4f", r.median)), " +
                "\"ms_p90\": \(String(format: "%.4f", r.p90)), \"cpu_ms_median\": \(String(format: "%.4f", r.cpuMedian))}"
        }

        let settings: [(String, GenerateParameters)] = [
            ("greedy", GenerateParameters(temperature: 0)),
            ("temperature 0.6 (no filter)", GenerateParameters(temperature: 0.6)),
            ("top_p 0.9", GenerateParameters(temperature: 0.7, topP: 0.9)),
            ("top_k 40", GenerateParameters(temperature: 0.8, topK: 40)),
            ("min_p 0.05", GenerateParameters(temperature: 0.8, minP: 0.05)),
            ("top_p 0.95 + top_k 50 + min_p 0.05", GenerateParameters(temperature: 0.7, topP: 0.95, topK: 50, minP: 0.05)),
            ("top_p 0.9 + repetition_penalty 1.1 (20 tokens)", GenerateParameters(temperature: 0.7, topP: 0.9, repetitionPenalty: 1.1)),
        ]

        var rows: [String] = []
        for (label, t) in [("lm-like", lmLike), ("flat", flat)] {
        tables = t
        for (name, p) in settings {
            var sampler = Sampler(parameters: GenerateParameters(temperature: p.temperature, topP: p.topP, topK: p.topK, seed: 1, minP: p.minP))
            let history = Array(0..<20).map { $0 * 31 }
            let penalize = p.repetitionPenalty != nil
            let r = measure { logits in
                if penalize {
                    var x = logits
                    for t in Set(history) { x[t] = x[t] < 0 ? x[t] * 1.1 : x[t] / 1.1 }
                    return sampler.sample(x)
                }
                return sampler.sample(logits)
            }
            rows.append(row(label, name, r))
        }
        }
        tables = lmLike
        // The plain reference (sorts all logits): what sampling cost before.
        let savedIterations = iterations
        iterations = min(iterations, 20)
        let ref = measure { logits in Sampler.referenceDistribution(logits, temperature: 0.7, topP: 0.9).ids[0] }
        iterations = savedIterations
        rows.append(row("lm-like", "reference full sort, top_p 0.9", ref))

        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        print("""
        {
          "benchmark": "sampler",
          "vocab": \(vocab),
          "iterations": \(iterations),
          "build": "\(build)",
          "cores": \(ProcessInfo.processInfo.activeProcessorCount),
          "results": [
        \(rows.joined(separator: ",\n"))
          ]
        }
        """)
    }
}
