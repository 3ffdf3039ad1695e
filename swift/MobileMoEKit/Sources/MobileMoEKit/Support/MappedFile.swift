// A read-only memory mapping of a whole file (the weights are never copied into the heap).
// The mapping length is rounded up to the page size so the Metal backend can wrap page-aligned
// windows of it with `bytesNoCopy` buffers. Only regular files are mapped (RegularFile.open).
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

public enum MappedFileError: Error, CustomStringConvertible {
    case empty(String)
    case cannotMap(String, errno: Int32)

    public var description: String {
        switch self {
        case let .empty(path): return "\(path) is empty"
        case let .cannotMap(path, e): return "cannot mmap \(path): \(String(cString: strerror(e)))"
        }
    }
}

/// Owns one `mmap` of a file; unmapped on deinit. Immutable, so safe to share across threads.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    /// Start of the mapping (page-aligned).
    public let base: UnsafeRawPointer
    /// Bytes of the file.
    public let size: Int
    /// Bytes mapped: `size` rounded up to the page size.
    public let mappedLength: Int

    public static let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Regular files only (RegularFile.open: no blocking on a FIFO, no devices or directories).
    public init(path: String) throws {
        self.path = path
        let (fd, size) = try RegularFile.open(path)
        defer { close(fd) }
        guard size > 0 else { throw MappedFileError.empty(path) }
        let page = MappedFile.pageSize
        let length = (size + page - 1) / page * page
        let p = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw MappedFileError.cannotMap(path, errno: errno) }
        self.base = UnsafeRawPointer(p)
        self.size = size
        self.mappedLength = length
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), mappedLength)
    }
}
