// App lifecycle: GPU work must stop before the app leaves the foreground (a command buffer
// submitted from the background faults: kIOGPUCommandBufferCallbackErrorBackgroundExecutionNotPermitted).
// A `LifecycleSource` delivers the events; the model's `ComputeGate` closes on
// `.willResignActive` / `.didEnterBackground` and opens on `.didBecomeActive`. Generation waits
// at the gate before every forward pass and the Metal executor again right before each commit,
// so a paused generation keeps its KV cache and continues where it stopped. `.memoryWarning`
// runs the model's memory-warning handlers (idle chat sessions drop their KV caches).
//
// On iOS/tvOS/visionOS `SystemLifecycleSource` observes UIApplication's notifications; tests and
// other platforms inject a `ManualLifecycleSource`.
import Foundation
#if canImport(UIKit) && !os(watchOS)
import UIKit
#endif

public enum LifecycleEvent: Sendable, Equatable {
    case willResignActive, didEnterBackground, didBecomeActive, memoryWarning
}

public protocol LifecycleSource: Sendable {
    /// A new stream of the events from now on.
    func events() -> AsyncStream<LifecycleEvent>
}

/// Events sent by hand: the test double, and a way for apps to pause/resume themselves.
public final class ManualLifecycleSource: LifecycleSource, @unchecked Sendable {
    private let lock = NSLock()
    private var continuations: [UUID: AsyncStream<LifecycleEvent>.Continuation] = [:]

    public init() {}

    public func events() -> AsyncStream<LifecycleEvent> {
        AsyncStream { continuation in
            let id = UUID()
            lock.lock()
            continuations[id] = continuation
            lock.unlock()
            continuation.onTermination = { [weak self] _ in
                guard let self else { return }
                self.lock.lock()
                self.continuations[id] = nil
                self.lock.unlock()
            }
        }
    }

    public func send(_ event: LifecycleEvent) {
        lock.lock()
        let targets = Array(continuations.values)
        lock.unlock()
        for c in targets { c.yield(event) }
    }
}

/// No events (command-line tools, Linux).
public struct NoLifecycleEvents: LifecycleSource {
    public init() {}
    public func events() -> AsyncStream<LifecycleEvent> { AsyncStream { $0.finish() } }
}

#if canImport(UIKit) && !os(watchOS)
/// UIApplication's willResignActive / didEnterBackground / didBecomeActive / memory-warning
/// notifications.
public struct SystemLifecycleSource: LifecycleSource {
    public init() {}

    public func events() -> AsyncStream<LifecycleEvent> {
        AsyncStream { continuation in
            let center = NotificationCenter.default
            let pairs: [(Notification.Name, LifecycleEvent)] = [
                (UIApplication.willResignActiveNotification, .willResignActive),
                (UIApplication.didEnterBackgroundNotification, .didEnterBackground),
                (UIApplication.didBecomeActiveNotification, .didBecomeActive),
                (UIApplication.didReceiveMemoryWarningNotification, .memoryWarning),
            ]
            // Delivered synchronously on the posting (main) thread: the gate closes before
            // willResignActive returns.
            let tokens = pairs.map { name, event in
                center.addObserver(forName: name, object: nil, queue: nil) { _ in continuation.yield(event) }
            }
            let box = ObserverTokens(tokens)
            continuation.onTermination = { _ in box.remove() }
        }
    }
}

private final class ObserverTokens: @unchecked Sendable {
    let tokens: [NSObjectProtocol]
    init(_ tokens: [NSObjectProtocol]) { self.tokens = tokens }
    func remove() { tokens.forEach(NotificationCenter.default.removeObserver) }
}
#endif

/// The system source where there is one (UIKit apps), else no events.
public func defaultLifecycleSource() -> LifecycleSource {
    #if canImport(UIKit) && !os(watchOS)
    return SystemLifecycleSource()
    #else
    return NoLifecycleEvents()
    #endif
}

/// Open: compute may be submitted. Closed (paused): `waitUntilOpen` suspends until `open()`.
public final class ComputeGate: @unchecked Sendable {
    private let lock = NSLock()
    private var closed = false
    private var waiters: [UUID: CheckedContinuation<Void, Error>] = [:]
    /// Times a caller found the gate closed and waited (for tests and diagnostics).
    public private(set) var waits = 0

    public init() {}

    private func mustWait() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if closed { waits += 1 }
        return closed
    }

    public var isPaused: Bool { lock.lock(); defer { lock.unlock() }; return closed }

    public func close() { lock.lock(); closed = true; lock.unlock() }

    public func open() {
        lock.lock()
        closed = false
        let resumed = waiters
        waiters = [:]
        lock.unlock()
        for c in resumed.values { c.resume() }
    }

    /// Returns at once while open; else waits for `open()`. Throws CancellationError when the
    /// waiting task is cancelled.
    public func waitUntilOpen() async throws {
        guard mustWait() else { return }
        let id = UUID()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
                lock.lock()
                if !closed { lock.unlock(); c.resume(); return }
                if Task.isCancelled { lock.unlock(); c.resume(throwing: CancellationError()); return }
                waiters[id] = c
                lock.unlock()
            }
        } onCancel: {
            lock.lock()
            let c = waiters.removeValue(forKey: id)
            lock.unlock()
            c?.resume(throwing: CancellationError())
        }
    }
}
