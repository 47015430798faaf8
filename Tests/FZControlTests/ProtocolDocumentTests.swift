import FZControl
import Foundation
import Testing

/// docs/protocol.md and the code must not drift apart: every JSON example in the document,
/// read from the document itself, decodes (strictly: no unknown field) as a message of some
/// direction and encodes back to the same JSON.
@Suite("docs/protocol.md examples")
struct ProtocolDocumentTests {
    static let document: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/protocol.md")
        return (try? String(contentsOf: url, encoding: .utf8)) ?? ""
    }()

    /// What a message decodes as, per direction, re-encoded (nil: that direction refuses it).
    static func decodings(_ text: String) -> [String: String] {
        func attempt<M: ControlMessage>(_: M.Type) -> String? {
            (try? ControlCodec.decode(M.self, from: text, .rejectUnknownFields)).map { ControlCodec.encode($0) }
        }
        let all: [(String, String?)] = [
            ("ToClient", attempt(ToClient.self)), ("ToGateway", attempt(ToGateway.self)), ("ToRelay", attempt(ToRelay.self)),
            ("FromClient", attempt(FromClient.self)), ("FromGateway", attempt(FromGateway.self)), ("FromRelay", attempt(FromRelay.self)),
        ]
        return Dictionary(uniqueKeysWithValues: all.compactMap { k, v in v.map { (k, $0) } })
    }

    static func object(_ text: String) -> NSDictionary? {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? NSDictionary
    }

    @Test("the document has examples of every message type of every direction")
    func coverage() throws {
        let examples = DocumentExamples.extract(Self.document)
        #expect(examples.count >= 20, "found \(examples.count) examples in docs/protocol.md")
        var seen = Set<String>()
        for e in examples {
            guard let o = Self.object(e), let type = o["type"] as? String else { continue }
            for direction in Self.decodings(e).keys { seen.insert("\(direction).\(type)") }
        }
        let expected: Set<String> = [
            "ToClient.init", "ToClient.access_granted", "ToClient.access_denied", "ToClient.ice_candidates", "ToClient.presence",
            "ToClient.resource_updated", "ToClient.resource_removed", "ToClient.error", "ToClient.pong", "ToClient.reconnect",
            "ToGateway.init", "ToGateway.authorize", "ToGateway.ice_candidates", "ToGateway.presence", "ToGateway.revoke",
            "ToRelay.init", "FromClient.ping", "FromClient.request_access", "FromClient.ice_candidates",
            "FromGateway.authorized", "FromGateway.ice_candidates", "FromRelay.ping",
        ]
        #expect(expected.subtracting(seen).isEmpty, "no example of \(expected.subtracting(seen).sorted())")
    }

    @Test("every example decodes strictly and re-encodes to the same JSON")
    func roundTrip() throws {
        let examples = DocumentExamples.extract(Self.document)
        #expect(!examples.isEmpty)
        for e in examples {
            let original = try #require(Self.object(e), "not a JSON object: \(e)")
            let decoded = Self.decodings(e)
            #expect(!decoded.isEmpty, "no direction accepts the example: \(e)")
            for (direction, again) in decoded {
                #expect(Self.object(again) == original, "\(direction) re-encodes \(e) as \(again)")
            }
        }
    }

    @Test("an example edited to carry a wrong field is refused by every direction")
    func mutations() throws {
        for e in DocumentExamples.extract(Self.document) {
            let original = try #require(Self.object(e) as? [String: Any])
            // An extra field.
            var extra = original
            extra["bogus_field"] = 1
            #expect(Self.decodings(Self.text(extra)).isEmpty, "accepted with an extra field: \(e)")
            // Each body field renamed (a misspelling).
            for key in original.keys where key != "v" && key != "type" {
                var renamed = original
                renamed[key + "x"] = renamed.removeValue(forKey: key)
                #expect(Self.decodings(Self.text(renamed)).isEmpty, "accepted with \(key) misspelt: \(e)")
            }
        }
    }

    static func text(_ o: [String: Any]) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: o)) ?? Data(), as: UTF8.self)
    }
}

/// JSON examples in a Markdown document: each top-level object in a ```json block, and each
/// inline code span that is a message (starts with `{"v":`).
enum DocumentExamples {
    static func extract(_ markdown: String) -> [String] {
        var out: [String] = []
        var inBlock = false
        var block = ""
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") {
                if inBlock { out += objects(block) }
                inBlock = !inBlock && line.hasPrefix("```json")
                block = ""
                continue
            }
            if inBlock {
                block += line + "\n"
            } else {
                // Inline spans: `{"v": 1, …}`.
                let parts = line.split(separator: "`", omittingEmptySubsequences: false)
                for (i, p) in parts.enumerated() where i % 2 == 1 && p.hasPrefix("{\"v\"") { out.append(String(p)) }
            }
        }
        return out
    }

    /// Splits text into its top-level `{…}` values (braces inside strings ignored).
    static func objects(_ text: String) -> [String] {
        var out: [String] = []
        var depth = 0
        var inString = false
        var escaped = false
        var current = ""
        for c in text {
            if depth > 0 { current.append(c) }
            if inString {
                if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
                continue
            }
            switch c {
            case "\"": inString = true
            case "{":
                if depth == 0 { current = "{" }
                depth += 1
            case "}":
                depth -= 1
                if depth == 0 { out.append(current) }
            default: break
            }
        }
        return out
    }
}
