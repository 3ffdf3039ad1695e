// Where MobileMoEKit's few log lines go (backend fallback, memory warnings). Default: os.Logger
// (subsystem "MobileMoEKit") on Apple platforms, standard error elsewhere. Apps and tests
// replace the handler.
import Foundation
#if canImport(os)
import os
#endif

public final class MobileMoELog: @unchecked Sendable {
    public static let shared = MobileMoELog()
    private let lock = NSLock()
    private var handler: @Sendable (String) -> Void = MobileMoELog.systemHandler

    public func setHandler(_ handler: @escaping @Sendable (String) -> Void) {
        lock.lock()
        self.handler = handler
        lock.unlock()
    }

    public func resetHandler() { setHandler(MobileMoELog.systemHandler) }

    public func log(_ message: String) {
        lock.lock()
        let h = handler
        lock.unlock()
        h(message)
    }

    public static let systemHandler: @Sendable (String) -> Void = { message in
        #if canImport(os)
        Logger(subsystem: "MobileMoEKit", category: "backend").notice("\(message, privacy: .public)")
        #else
        FileHandle.standardError.write(Data("MobileMoEKit: \(message)\n".utf8))
        #endif
    }
}
