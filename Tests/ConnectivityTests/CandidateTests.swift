import FZCore
import FZTestSupport
import Testing

@testable import Connectivity

@Suite("ICE candidates: priorities (RFC 8445 §5.1.2) and candidate: lines (RFC 5245 §15.1)")
struct CandidateTests {
    @Test("priorities follow the type preferences 126/110/100/0 with the local preference and component")
    func priorities() {
        #expect(Candidate.priority(kind: .host) == 2_130_706_431)  // the value every implementation prints
        #expect(Candidate.priority(kind: .peerReflexive) == 1_862_270_975)
        #expect(Candidate.priority(kind: .serverReflexive) == 1_694_498_815)
        #expect(Candidate.priority(kind: .relayed) == 16_777_215)
        #expect(Candidate.priority(kind: .host, localPreference: 0, component: 2) == 126 << 24 | 254)
        let order = Candidate.Kind.allCases.sorted { Candidate.priority(kind: $0) > Candidate.priority(kind: $1) }
        #expect(order == [.host, .peerReflexive, .serverReflexive, .relayed])
    }

    @Test("foundations are stable and differ by type, base and server")
    func foundations() {
        let a = SocketAddress("10.0.0.1:5000")!
        #expect(Candidate.host(a).foundation == Candidate.host(SocketAddress("10.0.0.1:6000")!).foundation)
        #expect(Candidate.host(a).foundation != Candidate.host(SocketAddress("10.0.0.2:5000")!).foundation)
        let s1 = Candidate.serverReflexive(SocketAddress("203.0.113.1:1")!, base: a, server: SocketAddress("198.51.100.1:3478")!)
        let s2 = Candidate.serverReflexive(SocketAddress("203.0.113.1:1")!, base: a, server: SocketAddress("198.51.100.2:3478")!)
        #expect(s1.foundation != s2.foundation && s1.foundation != Candidate.host(a).foundation)
        #expect(s1.foundation.utf8.allSatisfy(Candidate.isIceChar))
    }

    @Test("lines from aioice, libnice, Chrome and Firefox parse; the canonical form round-trips")
    func parsesRealLines() throws {
        let cases: [(String, Candidate.Kind, String, String?)] = [
            ("candidate:1 1 UDP 2130706431 10.0.0.1 50000 typ host", .host, "10.0.0.1:50000", nil),
            ("candidate:2 1 UDP 1694498815 203.0.113.7 61000 typ srflx raddr 10.0.0.1 rport 50000", .serverReflexive,
             "203.0.113.7:61000", "10.0.0.1:50000"),
            // aioice: lower-case transport, foundation an MD5 hex
            ("candidate:b0a0c8d6e9e2b3c2e5bb0b2a40d70c8c 1 udp 16777215 198.51.100.9 49152 typ relay raddr 203.0.113.7 rport 61000",
             .relayed, "198.51.100.9:49152", "203.0.113.7:61000"),
            // Chrome: trailing extensions
            ("candidate:842163049 1 udp 1677729535 192.0.2.33 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag EsAw network-cost 999",
             .serverReflexive, "192.0.2.33:54321", "0.0.0.0:0"),
            ("a=candidate:3 1 UDP 2122252543 fe80::1 60000 typ host generation 0", .host, "[fe80::1]:60000", nil),
            ("candidate:4 1 udp 1862270975 2001:db8::5 4000 typ prflx raddr 2001:db8::1 rport 3000\r\n", .peerReflexive,
             "[2001:db8::5]:4000", "[2001:db8::1]:3000"),
        ]
        for (text, kind, address, related) in cases {
            let c = try Candidate(parsing: text)
            #expect(c.kind == kind, "\(text)")
            #expect(c.address == SocketAddress(address)!, "\(text)")
            #expect(c.related == related.flatMap { SocketAddress($0) }, "\(text)")
            #expect(c.component == 1)
            #expect(try Candidate(parsing: c.line) == c, "\(c.line)")
        }
        #expect(try Candidate(parsing: cases[0].0).line == "candidate:1 1 udp 2130706431 10.0.0.1 50000 typ host")
        #expect(try Candidate(parsing: "candidate:1 2 UDP 2130706430 10.0.0.1 50001 typ host").component == 2)
    }

    @Test("constructed candidates print lines that parse back to themselves")
    func roundTripsConstructed() throws {
        let base = SocketAddress("10.1.2.3:4000")!
        for c in [Candidate.host(base), .serverReflexive(SocketAddress("203.0.113.1:9")!, base: base),
                  .relayed(SocketAddress("[2001:db8::9]:50000")!, mapped: SocketAddress("[2001:db8::1]:1")!)] {
            #expect(try Candidate(parsing: c.line) == c)
        }
    }

    @Test("bad lines are typed errors, never traps")
    func rejectsBadLines() {
        let bad: [(String, CandidateParseError.Kind)] = [
            ("", .missingPrefix),
            ("1 1 UDP 2130706431 10.0.0.1 50000 typ host", .missingPrefix),
            ("candidate:1 1 UDP 2130706431 10.0.0.1 50000 typ", .tooFewFields),
            ("candidate:", .tooFewFields),
            ("candidate:f*o 1 UDP 1 10.0.0.1 50000 typ host", .badFoundation),
            ("candidate:\(String(repeating: "a", count: 33)) 1 UDP 1 10.0.0.1 5 typ host", .badFoundation),
            ("candidate:1 0 UDP 1 10.0.0.1 5 typ host", .badComponent),
            ("candidate:1 x UDP 1 10.0.0.1 5 typ host", .badComponent),
            ("candidate:1 1 TCP 1518280447 10.0.0.1 9 typ host tcptype active", .unsupportedTransport("TCP")),
            ("candidate:1 1 UDP 4294967296 10.0.0.1 5 typ host", .badPriority),
            ("candidate:1 1 UDP -1 10.0.0.1 5 typ host", .badPriority),
            ("candidate:1 1 UDP 1 3f1c-1a2b.local 5 typ host", .unresolvedAddress("3f1c-1a2b.local")),
            ("candidate:1 1 UDP 1 10.0.0.1 65536 typ host", .badPort),
            ("candidate:1 1 UDP 1 10.0.0.1 +5 typ host", .badPort),
            ("candidate:1 1 UDP 1 10.0.0.1 5 type host", .badType),
            ("candidate:1 1 UDP 1 10.0.0.1 5 typ lan", .badType),
            ("candidate:1 1 UDP 1 10.0.0.1 5 typ host generation", .badExtension),
            ("candidate:1 1 UDP 1 10.0.0.1 5 typ srflx raddr 10.0.0.2", .badRelatedAddress),
            ("candidate:1 1 UDP 1 10.0.0.1 5 typ srflx raddr 10.0.0.2 generation 0", .badRelatedAddress),
            ("candidate:1 1 UDP 1 10.0.0.1 5 typ srflx raddr nowhere rport 5", .badRelatedAddress),
            ("candidate:1 1 UDP 1 10.0.0.1 5 typ srflx raddr 10.0.0.2 rport 99999", .badRelatedAddress),
        ]
        for (text, kind) in bad {
            #expect(throws: CandidateParseError(kind), "\(text)") { try Candidate(parsing: text) }
        }
    }

    @Test("random mutations of a valid line parse or throw, and what parses prints a line that parses")
    func mutationsNeverTrap() {
        var rng = SplitMix64(seed: 0x1CE)
        let alphabet = Array("candite:0123456789 abcdefUDPtyphostsrflxrelayraddrrport.:-+/\r\n\u{0}é")
        let seed = Array("candidate:2 1 UDP 1694498815 203.0.113.7 61000 typ srflx raddr 10.0.0.1 rport 50000 generation 0")
        for _ in 0..<5000 {
            var s = seed
            for _ in 0..<Int(rng.next() % 4) + 1 {
                let i = Int(rng.next() % UInt64(s.count))
                switch rng.next() % 3 {
                case 0: s[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                case 1: s.remove(at: i)
                default: s.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: i)
                }
                if s.isEmpty { s = ["c"] }
            }
            if let c = try? Candidate(parsing: String(s)) {
                #expect((try? Candidate(parsing: c.line)) == c, "\(String(s))")
            }
        }
    }
}
