// The tensors of a checkpoint folder: `model.safetensors`, or the shards named by
// `model.safetensors.index.json` ({"weight_map": {tensor: shard file}}).
import Foundation

public struct TensorStore: Sendable {
    public let tensors: [String: TensorView]

    public init(tensors: [String: TensorView]) {
        self.tensors = tensors
    }

    /// Regular files only; the index is size-limited JSON of the shape
    /// {"metadata": {...}?, "weight_map": {tensor: "shard file name"}}, and every shard
    /// it names must exist and hold exactly the tensors mapped to it.
    public init(directory: URL) throws {
        let single = directory.appendingPathComponent("model.safetensors")
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        if RegularFile.exists(single.path) {
            self.init(tensors: try SafeTensorsFile(path: single.path).tensors)
        } else if RegularFile.exists(index.path) {
            let name = index.lastPathComponent
            let json: JSONValue
            do { json = try JSONValue.parse(contentsOf: index) } catch { throw SafeTensorsError.badJSON("\(name): \(error)") }
            guard let map = json["weight_map"]?.object else {
                throw SafeTensorsError.badJSON("\(name) has no weight_map object")
            }
            if let m = json["metadata"], !m.isNull, m.object == nil { throw SafeTensorsError.badJSON("\(name): metadata is not an object") }
            var byShard: [String: Set<String>] = [:]
            for (tensor, value) in map {
                guard let shard = value.string, !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                    throw SafeTensorsError.badEntry(tensor: tensor, reason: "weight_map value \(value) is not a shard file name")
                }
                byShard[shard, default: []].insert(tensor)
            }
            var tensors: [String: TensorView] = [:]
            for (shard, names) in byShard.sorted(by: { $0.key < $1.key }) {
                let file = try SafeTensorsFile(path: directory.appendingPathComponent(shard).path)
                for name in names.sorted() {
                    guard let view = file.tensors[name] else { throw SafeTensorsError.missingTensor("\(name) (in \(shard))") }
                    tensors[name] = view
                }
                if let extra = file.tensors.keys.filter({ !names.contains($0) }).sorted().first {
                    throw SafeTensorsError.badEntry(tensor: extra, reason: "in \(shard) but not in \(name)'s weight_map")
                }
            }
            self.init(tensors: tensors)
        } else {
            throw CheckpointError.missingFile("no model.safetensors or model.safetensors.index.json in \(directory.path)")
        }
    }

    public func contains(_ name: String) -> Bool { tensors[name] != nil }

    public func tensor(_ name: String) throws -> TensorView {
        guard let t = tensors[name] else { throw SafeTensorsError.missingTensor(name) }
        return t
    }
}
