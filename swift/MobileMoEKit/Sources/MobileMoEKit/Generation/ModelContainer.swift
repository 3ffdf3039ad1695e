// The model behind an actor (mlx-swift-lm's ModelContainer): one generation or chat turn uses
// the model at a time, in arrival order, however many tasks and chat sessions share it.
//
//     let container = try await ModelContainer.load(directory: url)
//     let chat = container.makeChatSession(instructions: "Be brief.")
//     let reply = try await chat.respond(to: "Hi!")
import Foundation

public actor ModelContainer {
    public nonisolated let model: MobileMoEModel
    let access = ExclusiveAccess()

    public init(model: MobileMoEModel) { self.model = model }

    public static func load(directory: URL, backend: BackendChoice = .automatic,
                            options: LoadOptions = LoadOptions()) async throws -> ModelContainer {
        ModelContainer(model: try await MobileMoEModel.load(directory: directory, backend: backend, options: options))
    }

    /// Runs `body` with exclusive use of the model.
    public func perform<R: Sendable>(_ body: @Sendable (MobileMoEModel) async throws -> R) async throws -> R {
        try await access.acquire()
        defer { access.release() }
        return try await body(model)
    }

    /// `model.generate`, after the generations and chat turns queued before it.
    public nonisolated func generate(_ prompt: Prompt, parameters: GenerateParameters = GenerateParameters())
        -> AsyncThrowingStream<GenerationEvent, Error> {
        let model = self.model, access = self.access
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    try await access.acquire()
                    defer { access.release() }
                    for try await event in model.generate(prompt, parameters: parameters) { continuation.yield(event) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// A chat session whose turns take their place in this container's queue.
    public nonisolated func makeChatSession(instructions: String? = nil, parameters: GenerateParameters = GenerateParameters(),
                                            history: [ChatMessage] = []) -> ChatSession {
        ChatSession(model: model, instructions: instructions, parameters: parameters, history: history, exclusive: access)
    }

    /// Pauses / resumes compute (as the lifecycle source does) and frees caches.
    public nonisolated func pause() { model.pause() }
    public nonisolated func resume() { model.resume() }
    public nonisolated func handleMemoryWarning() { model.handleMemoryWarning() }
}
