// A minimal SwiftUI chat over MobileMoEKit's public API: load a checkpoint folder from the app
// bundle into a ModelContainer, chat through one ChatSession (the KV cache is kept between
// turns), stream the reply, stop it, start over. Lifecycle (pause on willResignActive, resume
// on didBecomeActive) and memory warnings are handled by the package's default
// SystemLifecycleSource; the memory estimate is checked at load.
//
// Not part of the Swift package build and never built on the project's machines (Linux, no
// Xcode): add these two files to an iOS 17 / macOS 14 app target in Xcode, add the package
// (Package.swift at the repository root) and a "MobileMoE-S-QAT" folder reference with
// config.json, model.safetensors, tokenizer.json, tokenizer_config.json to the bundle.
// Large checkpoints need the com.apple.developer.kernel.increased-memory-limit entitlement.
import MobileMoEKit
import SwiftUI

@main
struct ChatApp: App {
    var body: some Scene {
        WindowGroup { ChatView() }
    }
}

struct Line: Identifiable, Equatable {
    let id = UUID()
    var role: ChatMessage.Role
    var text: String
}

@MainActor
@Observable
final class ChatModel {
    var lines: [Line] = []
    var status = "Loading…"
    var isGenerating = false
    private var session: ChatSession?
    private var current: Task<Void, Never>?

    func load() async {
        guard session == nil else { return }
        guard let folder = Bundle.main.url(forResource: "MobileMoE-S-QAT", withExtension: nil) else {
            status = "Add the MobileMoE-S-QAT folder to the app bundle."
            return
        }
        do {
            let container = try await ModelContainer.load(directory: folder, backend: .automatic,
                                                          options: LoadOptions(kvCache: .float32))
            let model = container.model
            session = container.makeChatSession(instructions: "You are a helpful assistant.",
                                                parameters: GenerateParameters(maxTokens: 512, temperature: 0.6, topP: 0.9))
            status = "Ready on \(model.backend.name)" + (model.backendFallbackReason.map { " (GPU not used: \($0))" } ?? "")
        } catch {
            status = "Could not load: \(error)"
        }
    }

    func send(_ text: String) {
        guard let session, !isGenerating, !text.isEmpty else { return }
        lines.append(Line(role: .user, text: text))
        lines.append(Line(role: .assistant, text: ""))
        isGenerating = true
        current = Task {
            do {
                for try await event in session.streamResponse(to: text) {
                    switch event {
                    case let .chunk(piece): lines[lines.count - 1].text += piece
                    case let .info(info):
                        status = String(format: "%.1f tok/s on %@, %d prompt tokens reused", info.tokensPerSecond,
                                        info.backend, info.cachedPromptTokenCount)
                    }
                }
            } catch {
                status = "Error: \(error)"
            }
            isGenerating = false
        }
    }

    func stop() { current?.cancel() }

    func reset() {
        stop()
        lines = []
        Task { await session?.reset() }
    }
}

struct ChatView: View {
    @State private var model = ChatModel()
    @State private var draft = ""

    var body: some View {
        NavigationStack {
            VStack(spacing: 0) {
                ScrollViewReader { proxy in
                    List(model.lines) { line in
                        Text(line.text.isEmpty ? "…" : line.text)
                            .frame(maxWidth: .infinity, alignment: line.role == .user ? .trailing : .leading)
                            .foregroundStyle(line.role == .user ? Color.accentColor : Color.primary)
                            .id(line.id)
                    }
                    .onChange(of: model.lines) { _, lines in
                        if let last = lines.last { proxy.scrollTo(last.id, anchor: .bottom) }
                    }
                }
                Text(model.status).font(.footnote).foregroundStyle(.secondary).padding(4)
                HStack {
                    TextField("Message", text: $draft).textFieldStyle(.roundedBorder).onSubmit(send)
                    if model.isGenerating {
                        Button("Stop", action: model.stop)
                    } else {
                        Button("Send", action: send).disabled(draft.isEmpty)
                    }
                }
                .padding()
            }
            .navigationTitle("MobileMoE")
            .toolbar { Button("New chat", action: model.reset) }
        }
        .task { await model.load() }
    }

    private func send() {
        model.send(draft)
        draft = ""
    }
}
