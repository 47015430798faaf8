/// A DNS name a resource stands for, with wildcards:
/// - `?` matches exactly one character of a label;
/// - `*` matches any run of characters (possibly none) within one label, so `*.corp.example`
///   matches `git.corp.example` but neither `corp.example` nor `a.b.corp.example`;
/// - a leading `**.` label matches one or more labels (`**.corp.example` matches
///   `a.b.corp.example`).
/// Matching is case-insensitive and ignores one trailing dot.
public struct DNSPattern: Hashable, Sendable, CustomStringConvertible {
    public let pattern: String

    public init(_ text: String) throws(ValidationError) {
        var t = text.trimmingSpaces.lowercased()
        if t.hasSuffix(".") { t.removeLast() }
        guard !t.isEmpty, t.utf8.count <= 253 else { throw ValidationError(field: "address", reason: "empty or too long DNS name") }
        let labels = t.split(separator: ".", omittingEmptySubsequences: false)
        for (i, label) in labels.enumerated() {
            guard !label.isEmpty, label.utf8.count <= 63 else {
                throw ValidationError(field: "address", reason: "empty or too long label in \(text)")
            }
            if label == "**" {
                guard i == 0, labels.count > 1 else { throw ValidationError(field: "address", reason: "** must be the first label") }
                continue
            }
            for c in label.utf8 {
                let ok = (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
                    || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: "*") || c == UInt8(ascii: "?")
                guard ok else { throw ValidationError(field: "address", reason: "invalid character in DNS name \(text)") }
            }
            guard !label.hasPrefix("-"), !label.hasSuffix("-") else {
                throw ValidationError(field: "address", reason: "a label may not begin or end with '-': \(text)")
            }
        }
        // Two labels at least, the last one literal and not all digits: `*` alone would match
        // every single-label name, and `300.1.1.1`, `1.2.3`, `01.2.3.4` are mistyped addresses,
        // not names (no top-level domain is numeric).
        guard labels.count >= 2 else {
            throw ValidationError(field: "address", reason: "a DNS name needs at least two labels (e.g. *.corp.example): \(text)")
        }
        let last = labels[labels.count - 1]
        guard !last.contains("*"), !last.contains("?") else {
            throw ValidationError(field: "address", reason: "the last label may not be a wildcard: \(text)")
        }
        guard !last.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw ValidationError(field: "address", reason: "not an IP address, and not a DNS name (numeric last label): \(text)")
        }
        pattern = t
    }

    public var isWildcard: Bool { pattern.contains("*") || pattern.contains("?") }

    public var description: String { pattern }

    public func matches(_ name: String) -> Bool {
        var n = name.lowercased()
        if n.hasSuffix(".") { n.removeLast() }
        let nameLabels = n.split(separator: ".", omittingEmptySubsequences: false).map { Array($0.utf8) }
        var patLabels = pattern.split(separator: ".", omittingEmptySubsequences: false).map { Array($0.utf8) }
        if patLabels.first == Array("**".utf8) {
            patLabels.removeFirst()
            guard nameLabels.count > patLabels.count else { return false }
            return zip(patLabels, nameLabels.suffix(patLabels.count)).allSatisfy(Self.labelMatches)
        }
        guard nameLabels.count == patLabels.count else { return false }
        return zip(patLabels, nameLabels).allSatisfy(Self.labelMatches)
    }

    /// Glob matching of one label (`*` any run, `?` one character), iterative with backtracking
    /// to the last star: linear in practice, never exponential.
    static func labelMatches(_ p: [UInt8], _ s: [UInt8]) -> Bool {
        var pi = 0, si = 0
        var star = -1, mark = 0
        while si < s.count {
            if pi < p.count && (p[pi] == UInt8(ascii: "?") || p[pi] == s[si]) {
                pi += 1
                si += 1
            } else if pi < p.count && p[pi] == UInt8(ascii: "*") {
                star = pi
                mark = si
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                si = mark
            } else {
                return false
            }
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}

extension DNSPattern: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.reason))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(pattern)
    }
}
