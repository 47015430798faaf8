/// Strict decoding for request bodies: a key the type does not know is an error, never ignored.
/// A misspelt policy condition (`source_cidr`, `timewindow`) that was silently dropped turned a
/// conditional grant into an unconditional one: fail closed, and name the key.
public struct AnyCodingKey: CodingKey, Hashable, Sendable {
    public var stringValue: String
    public var intValue: Int?

    public init(stringValue: String) { self.stringValue = stringValue }
    public init(intValue: Int) {
        stringValue = String(intValue)
        self.intValue = intValue
    }
}

extension Decoder {
    /// Throws `DecodingError.dataCorrupted` at the first key of this object that is not one of
    /// `Keys` (its coding path names the key, so the API's error names the field).
    public func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_: Keys.Type) throws {
        let known = Set(Keys.allCases.map(\.stringValue))
        let container = try container(keyedBy: AnyCodingKey.self)
        if let unknown = container.allKeys.sorted(by: { $0.stringValue < $1.stringValue }).first(where: { !known.contains($0.stringValue) }) {
            throw DecodingError.dataCorrupted(.init(codingPath: codingPath + [unknown], debugDescription: "is not a known field"))
        }
    }
}

/// A body type whose top-level keys are checked (`StrictKeys<Body>` decodes alongside it).
public protocol StrictlyKeyed: Decodable {
    associatedtype CodingKeys: CodingKey & CaseIterable
}

/// Decodes nothing but the check: `try decoder.decode(StrictKeys<T>.self, from: data)`.
public struct StrictKeys<Body: StrictlyKeyed>: Decodable {
    public init(from decoder: any Decoder) throws { try decoder.rejectUnknownKeys(Body.CodingKeys.self) }
}
