import Foundation

/// One direction of the control channel for one kind of peer: its messages, their `type` names
/// and the checks beyond their JSON shape.
public protocol ControlMessage: Sendable, Hashable {
    /// Who sends these, for error messages (`clients cannot send authorized`).
    static var senders: String { get }
    /// The `type` of this message on the wire.
    var type: String { get }
    /// Encodes the body's fields (beside `v` and `type`).
    func encodeBody(to encoder: any Encoder) throws
    /// Decodes the body of a message of `type`; nil when this direction has no such type.
    static func decodeBody(type: String, from decoder: any Decoder) throws -> Self?
    /// Limits the JSON shape cannot say (id lengths, candidate counts).
    func validate() throws(ErrorMessage)
}

extension ControlMessage {
    public func validate() throws(ErrorMessage) {}
}

/// What the portal sends a daemon: the session needs to recognise `reconnect` and `error`
/// whichever kind of peer it serves.
public protocol PortalMessage: ControlMessage {
    var isReconnect: Bool { get }
    var error: ErrorMessage? { get }
}

extension ToClient: PortalMessage {
    public var isReconnect: Bool { self == .reconnect }
    public var error: ErrorMessage? { if case .error(let e) = self { e } else { nil } }
}

extension ToGateway: PortalMessage {
    public var isReconnect: Bool { self == .reconnect }
    public var error: ErrorMessage? { if case .error(let e) = self { e } else { nil } }
}

extension ToRelay: PortalMessage {
    public var isReconnect: Bool { self == .reconnect }
    public var error: ErrorMessage? { if case .error(let e) = self { e } else { nil } }
}

/// The wire format (docs/protocol.md): one JSON object per WebSocket text message,
/// `{"v": 1, "type": "…", …body}`, snake_case keys.
public enum ControlCodec {
    public static let version = 1
    public static let maxIDBytes = 128
    public static let maxCandidates = 64
    public static let maxCandidateBytes = 512

    /// How unknown fields are treated. The portal refuses them in what peers send (a misspelt
    /// field must fail closed, never be ignored); peers accept them in what the portal sends, so
    /// a newer portal can add a field within `v: 1` without breaking older daemons.
    public enum Strictness: Sendable { case rejectUnknownFields, ignoreUnknownFields }

    public static func encode<M: ControlMessage>(_ message: M) -> String {
        // Bodies are strings, numbers, booleans and arrays of them: encoding cannot fail.
        (try? String(decoding: JSONCoding.encoder.encode(Envelope(message: message)), as: UTF8.self))
            ?? #"{"code":"internal","message":"cannot encode","type":"error","v":1}"#
    }

    /// Decodes one text message; every refusal is an `ErrorMessage` with the protocol's code
    /// (`malformed`, `unsupported_version`, `unknown_type`) and names the field at fault.
    public static func decode<M: ControlMessage>(_ type: M.Type, from text: String, _ strictness: Strictness) throws(ErrorMessage) -> M {
        let data = Data(text.utf8)
        guard let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) as? [String: Any] else {
            throw .malformed("not a JSON object")
        }
        guard let header = try? JSONCoding.decoder.decode(Header.self, from: data) else {
            throw .malformed("v and type must be a number and a string")
        }
        guard header.v == version else { throw ErrorMessage(code: ErrorMessage.unsupportedVersion, message: "expected v: \(version)") }
        guard let kind = header.type else { throw .malformed("type is required") }
        let message: M
        do {
            message = try JSONCoding.decoder.decode(Envelope<M>.self, from: data).message
        } catch let e as DecodingError {
            throw .malformed(e.fieldPath.map { "\($0) \(e.reason)" } ?? "cannot be decoded")
        } catch is UnknownType {
            throw ErrorMessage(code: ErrorMessage.unknownType, message: "\(M.senders) cannot send \(kind)")
        } catch {
            throw .malformed("cannot be decoded")
        }
        if strictness == .rejectUnknownFields {
            let again = (try? JSONSerialization.jsonObject(with: JSONCoding.encoder.encode(Envelope(message: message)))) ?? [:]
            if let unknown = unknownField(object, known: again, path: []) {
                throw .malformed("\(unknown) is not a known field")
            }
        }
        try message.validate()
        return message
    }

    private struct Header: Decodable {
        var v: Int?
        var type: String?
    }

    struct UnknownType: Error {}

    /// The first key of `given` (depth first, sorted) that `known`, the same value encoded again,
    /// does not have. A key given as `null` counts as absent (an optional field may be spelt so).
    static func unknownField(_ given: Any, known: Any, path: [String]) -> String? {
        if let g = given as? [String: Any] {
            let k = known as? [String: Any] ?? [:]
            for key in g.keys.sorted() where !(g[key] is NSNull) {
                guard let kv = k[key] else { return (path + [key]).joined(separator: ".") }
                if let found = unknownField(g[key]!, known: kv, path: path + [key]) { return found }
            }
        } else if let g = given as? [Any], let k = known as? [Any], g.count == k.count {
            for (i, (gv, kv)) in zip(g, k).enumerated() {
                if let found = unknownField(gv, known: kv, path: path + [String(i)]) { return found }
            }
        }
        return nil
    }

    // MARK: Checks shared by the messages

    static func checkID<E>(_ id: ID<E>, _ field: String) throws(ErrorMessage) {
        guard !id.rawValue.isEmpty, id.rawValue.utf8.count <= maxIDBytes else {
            throw .malformed("\(field) must be 1-\(maxIDBytes) bytes")
        }
    }

    static func checkCandidates(_ c: [String]) throws(ErrorMessage) {
        guard c.count <= maxCandidates, c.allSatisfy({ !$0.isEmpty && $0.utf8.count <= maxCandidateBytes }) else {
            throw .malformed("candidates: at most \(maxCandidates) strings of 1-\(maxCandidateBytes) bytes")
        }
    }
}

/// `v` and `type` beside the body's fields.
struct Envelope<M: ControlMessage>: Codable {
    var message: M

    enum Keys: String, CodingKey { case v, type }

    init(message: M) { self.message = message }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        let type = try c.decode(String.self, forKey: .type)
        guard let m = try M.decodeBody(type: type, from: decoder) else { throw ControlCodec.UnknownType() }
        message = m
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(ControlCodec.version, forKey: .v)
        try c.encode(message.type, forKey: .type)
        try message.encodeBody(to: encoder)
    }
}

// MARK: - The six directions

extension ToClient: ControlMessage {
    public static var senders: String { "the portal" }

    public var type: String {
        switch self {
        case .initialize: "init"
        case .accessGranted: "access_granted"
        case .accessDenied: "access_denied"
        case .iceCandidates: "ice_candidates"
        case .presence: "presence"
        case .resourceUpdated: "resource_updated"
        case .resourceRemoved: "resource_removed"
        case .error: "error"
        case .pong: "pong"
        case .reconnect: "reconnect"
        }
    }

    public func encodeBody(to encoder: any Encoder) throws {
        switch self {
        case .initialize(let b): try b.encode(to: encoder)
        case .accessGranted(let b): try b.encode(to: encoder)
        case .accessDenied(let b): try b.encode(to: encoder)
        case .iceCandidates(let b): try b.encode(to: encoder)
        case .presence(let b): try b.encode(to: encoder)
        case .resourceUpdated(let b): try b.encode(to: encoder)
        case .resourceRemoved(let b): try b.encode(to: encoder)
        case .error(let b): try b.encode(to: encoder)
        case .pong, .reconnect: break
        }
    }

    public static func decodeBody(type: String, from d: any Decoder) throws -> ToClient? {
        switch type {
        case "init": .initialize(try ClientInit(from: d))
        case "access_granted": .accessGranted(try AccessGranted(from: d))
        case "access_denied": .accessDenied(try AccessDenied(from: d))
        case "ice_candidates": .iceCandidates(try GatewayCandidates(from: d))
        case "presence": .presence(try Presence(from: d))
        case "resource_updated": .resourceUpdated(try ResourceUpdated(from: d))
        case "resource_removed": .resourceRemoved(try ResourceRemoved(from: d))
        case "error": .error(try ErrorMessage(from: d))
        case "pong": .pong
        case "reconnect": .reconnect
        default: nil
        }
    }
}

extension ToGateway: ControlMessage {
    public static var senders: String { "the portal" }

    public var type: String {
        switch self {
        case .initialize: "init"
        case .authorize: "authorize"
        case .iceCandidates: "ice_candidates"
        case .presence: "presence"
        case .revoke: "revoke"
        case .error: "error"
        case .pong: "pong"
        case .reconnect: "reconnect"
        }
    }

    public func encodeBody(to encoder: any Encoder) throws {
        switch self {
        case .initialize(let b): try b.encode(to: encoder)
        case .authorize(let b): try b.encode(to: encoder)
        case .iceCandidates(let b): try b.encode(to: encoder)
        case .presence(let b): try b.encode(to: encoder)
        case .revoke(let b): try b.encode(to: encoder)
        case .error(let b): try b.encode(to: encoder)
        case .pong, .reconnect: break
        }
    }

    public static func decodeBody(type: String, from d: any Decoder) throws -> ToGateway? {
        switch type {
        case "init": .initialize(try GatewayInit(from: d))
        case "authorize": .authorize(try Authorize(from: d))
        case "ice_candidates": .iceCandidates(try ClientCandidates(from: d))
        case "presence": .presence(try Presence(from: d))
        case "revoke": .revoke(try Revoke(from: d))
        case "error": .error(try ErrorMessage(from: d))
        case "pong": .pong
        case "reconnect": .reconnect
        default: nil
        }
    }
}

extension ToRelay: ControlMessage {
    public static var senders: String { "the portal" }

    public var type: String {
        switch self {
        case .initialize: "init"
        case .error: "error"
        case .pong: "pong"
        case .reconnect: "reconnect"
        }
    }

    public func encodeBody(to encoder: any Encoder) throws {
        switch self {
        case .initialize(let b): try b.encode(to: encoder)
        case .error(let b): try b.encode(to: encoder)
        case .pong, .reconnect: break
        }
    }

    public static func decodeBody(type: String, from d: any Decoder) throws -> ToRelay? {
        switch type {
        case "init": .initialize(try RelayInit(from: d))
        case "error": .error(try ErrorMessage(from: d))
        case "pong": .pong
        case "reconnect": .reconnect
        default: nil
        }
    }
}

extension FromClient: ControlMessage {
    public static var senders: String { "clients" }

    public var type: String {
        switch self {
        case .ping: "ping"
        case .requestAccess: "request_access"
        case .iceCandidates: "ice_candidates"
        }
    }

    public func encodeBody(to encoder: any Encoder) throws {
        switch self {
        case .ping: break
        case .requestAccess(let b): try b.encode(to: encoder)
        case .iceCandidates(let b): try b.encode(to: encoder)
        }
    }

    public static func decodeBody(type: String, from d: any Decoder) throws -> FromClient? {
        switch type {
        case "ping": .ping
        case "request_access": .requestAccess(try RequestAccess(from: d))
        case "ice_candidates": .iceCandidates(try GatewayCandidates(from: d))
        default: nil
        }
    }

    public func validate() throws(ErrorMessage) {
        switch self {
        case .ping: break
        case .requestAccess(let b): try ControlCodec.checkID(b.resourceId, "resource_id")
        case .iceCandidates(let b):
            try ControlCodec.checkID(b.gatewayId, "gateway_id")
            try ControlCodec.checkCandidates(b.candidates)
        }
    }
}

extension FromGateway: ControlMessage {
    public static var senders: String { "gateways" }

    public var type: String {
        switch self {
        case .ping: "ping"
        case .authorized: "authorized"
        case .iceCandidates: "ice_candidates"
        }
    }

    public func encodeBody(to encoder: any Encoder) throws {
        switch self {
        case .ping: break
        case .authorized(let b): try b.encode(to: encoder)
        case .iceCandidates(let b): try b.encode(to: encoder)
        }
    }

    public static func decodeBody(type: String, from d: any Decoder) throws -> FromGateway? {
        switch type {
        case "ping": .ping
        case "authorized": .authorized(try Authorized(from: d))
        case "ice_candidates": .iceCandidates(try ClientCandidates(from: d))
        default: nil
        }
    }

    public func validate() throws(ErrorMessage) {
        switch self {
        case .ping: break
        case .authorized(let b): try ControlCodec.checkID(b.requestId, "request_id")
        case .iceCandidates(let b):
            try ControlCodec.checkID(b.clientId, "client_id")
            try ControlCodec.checkCandidates(b.candidates)
        }
    }
}

extension FromRelay: ControlMessage {
    public static var senders: String { "relays" }

    public var type: String { "ping" }

    public func encodeBody(to encoder: any Encoder) throws {}

    public static func decodeBody(type: String, from d: any Decoder) throws -> FromRelay? {
        type == "ping" ? .ping : nil
    }
}
