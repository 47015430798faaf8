import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOWebSocket

/// Messages received by a test peer, awaited with a deadline (never a fixed sleep).
actor Inbox {
    private var buffer: [String] = []
    private var waiter: (id: Int, continuation: CheckedContinuation<String?, Never>)?
    private var finished = false
    private var nextID = 0

    func push(_ text: String) {
        if let w = waiter {
            waiter = nil
            w.continuation.resume(returning: text)
        } else {
            buffer.append(text)
        }
    }

    func finish() {
        finished = true
        if let w = waiter {
            waiter = nil
            w.continuation.resume(returning: nil)
        }
    }

    /// The next message, or nil when the connection closed or `timeout` passed first.
    func next(timeout: Duration) async -> String? {
        if !buffer.isEmpty { return buffer.removeFirst() }
        if finished { return nil }
        nextID += 1
        let id = nextID
        return await withCheckedContinuation { c in
            waiter = (id, c)
            Task {
                try? await Task.sleep(for: timeout)
                self.expire(id)
            }
        }
    }

    private func expire(_ id: Int) {
        if let w = waiter, w.id == id {
            waiter = nil
            w.continuation.resume(returning: nil)
        }
    }

    var isFinished: Bool { finished && buffer.isEmpty }
}

/// A JSON message as received.
struct Message: @unchecked Sendable {
    let object: [String: Any]
    var type: String? { object["type"] as? String }
    subscript(key: String) -> String? { object[key] as? String }
    func dict(_ key: String) -> [String: Any] { object[key] as? [String: Any] ?? [:] }
    func array(_ key: String) -> [[String: Any]] { object[key] as? [[String: Any]] ?? [] }

    init?(_ text: String) {
        guard let o = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return nil }
        object = o
    }
}

struct Timeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// A real WebSocket peer of the control channel (HummingbirdWSClient), driven by the test.
final class ControlPeer: Sendable {
    enum Command: Sendable {
        case text(String)
        case close
    }

    let inbox = Inbox()
    private let commands: AsyncStream<Command>.Continuation
    let task: Task<WebSocketCloseFrame?, any Error>

    init(url: String, token: String) {
        let (stream, commands) = AsyncStream<Command>.makeStream()
        self.commands = commands
        let inbox = self.inbox
        var config = WebSocketClientConfiguration(maxFrameSize: 1 << 17)
        config.additionalHeaders[.authorization] = "Bearer \(token)"
        let configuration = config
        task = Task {
            defer { Task { await inbox.finish() } }
            return try await WebSocketClient.connect(url: url, configuration: configuration, logger: Logger(label: "test-peer")) { inbound, outbound, _ in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await command in stream {
                            switch command {
                            case .text(let t): try await outbound.write(.text(t))
                            case .close:
                                try await outbound.close(.normalClosure, reason: nil)
                                return
                            }
                        }
                    }
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        if case .text(let t) = message { await inbox.push(t) }
                    }
                    await inbox.finish()
                    group.cancelAll()
                }
            }
        }
    }

    func send(_ json: String) { commands.yield(.text(json)) }
    func close() { commands.yield(.close) }

    /// The next message of `type` (others are skipped) within `timeout`.
    func next(_ type: String, timeout: Duration = .seconds(5)) async throws -> Message {
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero, let text = await inbox.next(timeout: left) else { throw Timeout(what: type) }
            if let m = Message(text), m.type == type { return m }
        }
    }

    /// The very next message, whatever its type.
    func nextAny(timeout: Duration = .seconds(5)) async throws -> Message {
        guard let text = await inbox.next(timeout: timeout), let m = Message(text) else { throw Timeout(what: "any message") }
        return m
    }

    /// True once the server closed the connection (within `timeout`), after any queued messages.
    func closed(timeout: Duration = .seconds(5)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await inbox.next(timeout: deadline - ContinuousClock.now) == nil { return await inbox.isFinished }
        }
        return await inbox.isFinished
    }
}
