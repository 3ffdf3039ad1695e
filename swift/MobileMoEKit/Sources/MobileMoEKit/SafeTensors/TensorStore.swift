// The tensors of a checkpoint folder: `model.safetensors`, or the shards named by
// `model.safetensors.index.json` ({"weight_map": {tensor: shard file}}).
import Foundation

public struct TensorStore: Sendable {
    public let tensors: [String: TensorView]

    public init(tensors: [String: TensorView]) {
        self.tensors = tensors
    }

    public init(directory: URL) throws {
        let fm = FileManager.default
        let single = directory.appendingPathComponent("model.safetensors")
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        if fm.fileExists(atPath: single.path) {
            self.init(tensors: try SafeTensorsFile(path: single.path).tensors)
        } else if fm.fileExists(atPath: index.path) {
            let json = try JSONValue.parse(Data(contentsOf: index))
            guard let map = json["weight_map"]?.object else {
                throw SafeTensorsError.badJSON("\(index.lastPathComponent) has no weight_map object")
            }
            var shards: [String: SafeTensorsFile] = [:]
            var tensors: [String: TensorView] = [:]
            for (name, value) in map {
                guard let shard = value.string, !shard.contains("/") else {
                    throw SafeTensorsError.badEntry(tensor: name, reason: "weight_map value is not a shard file name")
                }
                if shards[shard] == nil {
                    shards[shard] = try SafeTensorsFile(path: directory.appendingPathComponent(shard).path)
                }
                guard let view = shards[shard]!.tensors[name] else { throw SafeTensorsError.missingTensor("\(name) (in \(shard))") }
                tensors[name] = view
            }
            self.init(tensors: tensors)
        } else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: single.path,
                NSLocalizedDescriptionKey: "no model.safetensors or model.safetensors.index.json in \(directory.path)"])
        }
    }

    public func contains(_ name: String) -> Bool { tensors[name] != nil }

    public func tensor(_ name: String) throws -> TensorView {
        guard let t = tensors[name] else { throw SafeTensorsError.missingTensor(name) }
        return t
    }
}
