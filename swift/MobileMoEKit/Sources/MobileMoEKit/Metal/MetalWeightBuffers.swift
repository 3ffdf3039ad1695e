// The checkpoint's tensors as Metal buffers without copying: each mmap'd file is wrapped with
// makeBuffer(bytesNoCopy:) — page-aligned start and length — as one buffer when it fits in
// maxBufferLength, else one page-aligned window per tensor. A tensor whose offset is not
// aligned for its element type (safetensors does not align) is copied into its own buffer.
#if canImport(Metal)
import Foundation
import Metal

final class MetalWeightBuffers {
    private var locations: [String: (MTLBuffer, Int)] = [:]
    /// Bytes copied because of misalignment (0 for files written by mlx_mobilemoe).
    private(set) var copiedBytes = 0

    init(tensors: [String: TensorView], device: MTLDevice) throws {
        let page = MappedFile.pageSize
        var whole: [ObjectIdentifier: MTLBuffer] = [:]
        for (name, t) in tensors {
            let align = t.dtype == .u8 ? 4 : t.dtype.byteSize  // packed int4 is read as uint32 words
            if t.fileOffset % align != 0 {
                guard let copy = device.makeBuffer(bytes: t.data, length: t.byteCount, options: .storageModeShared) else {
                    throw InferenceError.backendUnavailable("cannot allocate a copy of \(name)")
                }
                copiedBytes += t.byteCount
                locations[name] = (copy, 0)
                continue
            }
            let file = t.file
            let base = UnsafeMutableRawPointer(mutating: file.base)
            if file.mappedLength <= device.maxBufferLength {
                let key = ObjectIdentifier(file)
                if whole[key] == nil {
                    guard let b = device.makeBuffer(bytesNoCopy: base, length: file.mappedLength, options: .storageModeShared, deallocator: nil) else {
                        throw InferenceError.backendUnavailable("cannot wrap \(file.path) in a Metal buffer")
                    }
                    whole[key] = b
                }
                locations[name] = (whole[key]!, t.fileOffset)
            } else {
                let start = t.fileOffset / page * page
                let end = min(file.mappedLength, (t.fileOffset + t.byteCount + page - 1) / page * page)
                guard end - start <= device.maxBufferLength,
                      let b = device.makeBuffer(bytesNoCopy: base + start, length: end - start, options: .storageModeShared, deallocator: nil)
                else { throw InferenceError.backendUnavailable("tensor \(name) does not fit in one Metal buffer") }
                locations[name] = (b, t.fileOffset - start)
            }
        }
    }

    /// The buffer holding tensor `name` and the tensor's byte offset in it.
    func location(of name: String) -> (MTLBuffer, Int) { locations[name]! }
}
#endif
