import Foundation

/// The one JSON convention of the API and the control channel: snake_case keys, sorted for
/// readable output.
public enum JSONCoding {
    public static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    public static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }
}

extension DecodingError {
    /// The field that failed, as the sender wrote it (`snake_case`, `.`-joined, array indices as
    /// numbers), or nil when the input was not JSON at all.
    public var fieldPath: String? {
        func path(_ p: [any CodingKey]) -> String {
            p.map { k in k.intValue.map(String.init) ?? JSONCoding.snakeCase(k.stringValue) }.joined(separator: ".")
        }
        switch self {
        case .keyNotFound(let key, let ctx): return path(ctx.codingPath + [key])
        case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .dataCorrupted(let ctx):
            return ctx.codingPath.isEmpty ? nil : path(ctx.codingPath)
        @unknown default: return nil
        }
    }

    /// Why, in a few words (`is required`, `has the wrong type`, or the value's own complaint).
    public var reason: String {
        switch self {
        case .keyNotFound: "is required"
        case .typeMismatch, .valueNotFound: "has the wrong type"
        case .dataCorrupted(let ctx): ctx.codingPath.isEmpty ? "is not valid JSON" : ctx.debugDescription
        @unknown default: "cannot be decoded"
        }
    }
}

extension JSONCoding {
    /// `clientPublicKey` → `client_public_key`: how a Swift property name appears on the wire.
    public static func snakeCase(_ s: String) -> String {
        var out = ""
        for c in s {
            if c.isUppercase {
                out += "_" + c.lowercased()
            } else {
                out.append(c)
            }
        }
        return out
    }
}
