// Bounded reads of regular files. Every checkpoint file goes through here (or through
// MappedFile, which applies the same rule): it is opened without blocking (a FIFO named
// config.json must not hang the loader), refused unless it is a regular file (a directory,
// FIFO, socket or device such as /dev/zero is an error, not an endless read), and refused when
// it is larger than the limit for its kind, before a byte is read.
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

public enum FileAccessError: Error, Equatable, CustomStringConvertible {
    case missing(String)
    case cannotOpen(String, errno: Int32)
    case notRegular(String, kind: String)
    case tooLarge(String, size: Int, limit: Int)
    case cannotRead(String, errno: Int32)

    public var description: String {
        switch self {
        case let .missing(path): return "\(path) does not exist"
        case let .cannotOpen(path, e): return "cannot open \(path): \(String(cString: strerror(e)))"
        case let .notRegular(path, kind): return "\(path) is a \(kind), not a regular file"
        case let .tooLarge(path, size, limit): return "\(path) has \(size) bytes, more than the \(limit)-byte limit for this file"
        case let .cannotRead(path, e): return "cannot read \(path): \(String(cString: strerror(e)))"
        }
    }
}

public enum FileLimits {
    /// config.json, generation_config.json, tokenizer_config.json, the shard index.
    public static let smallJSON = 16 << 20
    /// tokenizer.json (Llama 3's is 9 MB, the largest public ones about 35 MB).
    public static let tokenizerJSON = 256 << 20
    /// chat_template.jinja
    public static let chatTemplate = 1 << 20
}

enum RegularFile {
    /// Opens `path` read-only without blocking and checks that it is a regular file.
    /// Returns the descriptor (caller closes it) and the file's size.
    static func open(_ path: String) throws -> (fd: Int32, size: Int) {
        let fd = posixOpen(path)
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT { throw FileAccessError.missing(path) }
            throw FileAccessError.cannotOpen(path, errno: e)
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw FileAccessError.cannotOpen(path, errno: e)
        }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG else {
            close(fd)
            throw FileAccessError.notRegular(path, kind: kindName(type))
        }
        return (fd, Int(st.st_size))
    }

    /// The whole file, at most `limit` bytes (a larger file is refused unread).
    static func read(_ path: String, limit: Int) throws -> Data {
        let (fd, size) = try open(path)
        defer { close(fd) }
        guard size <= limit else { throw FileAccessError.tooLarge(path, size: size, limit: limit) }
        var data = Data(count: size)
        var done = 0
        while done < size {
            let n = data.withUnsafeMutableBytes { raw in
                posixRead(fd, raw.baseAddress! + done, size - done)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileAccessError.cannotRead(path, errno: errno)
            }
            if n == 0 { break }  // the file shrank while we read it: keep what is there
            done += n
        }
        if done < size { data.removeSubrange(done..<size) }
        return data
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func kindName(_ type: mode_t) -> String {
        switch type {
        case S_IFDIR: return "directory"
        case S_IFIFO: return "FIFO"
        case S_IFCHR: return "character device"
        case S_IFBLK: return "block device"
        case S_IFSOCK: return "socket"
        case S_IFLNK: return "symbolic link"
        default: return "special file"
        }
    }
}

// The libc calls under names that do not collide with the methods above.
@inline(__always) private func posixOpen(_ path: String) -> Int32 {
    open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
}

@inline(__always) private func posixRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
    read(fd, buffer, count)
}

extension JSONValue {
    /// Parses a JSON file read with `RegularFile.read` (regular file, at most `limit` bytes).
    static func parse(contentsOf url: URL, limit: Int = FileLimits.smallJSON) throws -> JSONValue {
        try parse(RegularFile.read(url.path, limit: limit))
    }
}
