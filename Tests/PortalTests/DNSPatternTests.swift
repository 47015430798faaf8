import FZControl
import Testing
@testable import Portal

@Suite("DNS name patterns")
struct DNSPatternTests {
    @Test("an exact name matches itself case-insensitively and with a trailing dot")
    func exact() throws {
        let p = try DNSPattern("git.corp.example")
        #expect(p.matches("git.corp.example"))
        #expect(p.matches("GIT.Corp.Example."))
        #expect(!p.matches("gitx.corp.example"))
        #expect(!p.isWildcard)
    }

    @Test("a star label matches exactly one label")
    func starLabel() throws {
        let p = try DNSPattern("*.corp.example")
        #expect(p.matches("git.corp.example"))
        #expect(!p.matches("corp.example"))
        #expect(!p.matches("a.b.corp.example"))
        #expect(!p.matches("corp.example.org"))
    }

    @Test("a star inside a label matches any run within that label only")
    func starInsideLabel() throws {
        let p = try DNSPattern("db-*.corp.example")
        #expect(p.matches("db-1.corp.example"))
        #expect(p.matches("db-.corp.example"))
        #expect(!p.matches("web-1.corp.example"))
    }

    @Test("a question mark matches exactly one character")
    func questionMark() throws {
        let p = try DNSPattern("host?.corp.example")
        #expect(p.matches("host1.corp.example"))
        #expect(!p.matches("host.corp.example"))
        #expect(!p.matches("host12.corp.example"))
    }

    @Test("a leading double star matches one or more labels")
    func doubleStar() throws {
        let p = try DNSPattern("**.corp.example")
        #expect(p.matches("a.corp.example"))
        #expect(p.matches("a.b.c.corp.example"))
        #expect(!p.matches("corp.example"))
    }

    @Test("malformed names are rejected with the address field")
    func invalid() {
        for bad in ["", "a..b", "bad name.example", "a.**.example", String(repeating: "a", count: 64) + ".example"] {
            #expect(throws: ValidationError.self) { try DNSPattern(bad) }
        }
    }

    @Test("pathological patterns match in bounded time")
    func pathological() throws {
        let p = try DNSPattern(String(repeating: "*a", count: 20) + ".example")
        #expect(!p.matches(String(repeating: "a", count: 60) + "b.example"))
    }
}
