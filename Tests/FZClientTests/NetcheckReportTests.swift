import FZCore
import Testing

@testable import FZClient

private let hostLAN = IPAddress.v4(IPv4Address(10, 0, 0, 2))
private let host6 = IPAddress.v6(IPv6Address("2001:db8::2")!)
private let localPorts: [AddressFamily: UInt16] = [.v4: 5000, .v6: 5001]
private let local: [IPAddress] = [.v4(.loopback), hostLAN, host6]

private func samples(_ relay: SocketAddress, rtts ms: [Int], mapped: SocketAddress?, sent: Int? = nil)
    -> NetcheckProbe.RelaySamples
{
    var s = NetcheckProbe.RelaySamples(address: relay)
    s.rtts = ms.map { .milliseconds($0) }
    s.mapped = mapped.map { Array(repeating: $0, count: ms.count) } ?? []
    s.sent = sent ?? ms.count
    return s
}

private func v4(_ d: UInt8, _ port: UInt16) -> SocketAddress { SocketAddress(IPv4Address(203, 0, 113, d), port) }

@Suite("netcheck report: median, mapping behaviour, preferred relay, output")
struct NetcheckReportTests {
    @Test("the median is the middle sample, or the mean of the two middle ones")
    func median() {
        #expect(NetcheckReport.median([]) == nil)
        #expect(NetcheckReport.median([7]) == 7)
        #expect(NetcheckReport.median([40, 5, 300, 6, 5]) == 6)
        #expect(NetcheckReport.median([4, 1, 3, 2]) == 2.5)
    }

    @Test("a relay's RTT is the median of its samples, so one slow answer does not move it")
    func relayRTTIsTheMedian() {
        let r = NetcheckReport(samples: [samples(relayA, rtts: [5, 6, 250, 5, 7], mapped: v4(1, 40000))],
                               localAddresses: local, localPorts: localPorts)
        #expect(r.relays[0].rttMilliseconds == 6)
        #expect(r.relays[0].samples == 5)
    }

    @Test("two relays seeing the same translated address and port: endpoint-independent")
    func sameMappingIsIndependent() {
        let m = NetcheckReport.classify(mapped: [v4(1, 40000), v4(1, 40000)], localAddresses: local, localPorts: localPorts)
        #expect(m == .endpointIndependent)
    }

    @Test("two relays seeing different ports (or addresses): endpoint-dependent")
    func differentMappingIsDependent() {
        #expect(NetcheckReport.classify(mapped: [v4(1, 40000), v4(1, 40001)], localAddresses: local, localPorts: localPorts)
            == .endpointDependent)
        #expect(NetcheckReport.classify(mapped: [v4(1, 40000), v4(2, 40000)], localAddresses: local, localPorts: localPorts)
            == .endpointDependent)
    }

    @Test("a mapped address that is one of ours, with our socket's port: none")
    func localAddressIsNone() {
        let own = SocketAddress(ip: hostLAN, port: 5000)
        #expect(NetcheckReport.classify(mapped: [own, own], localAddresses: local, localPorts: localPorts) == .none)
        #expect(NetcheckReport.classify(mapped: [own], localAddresses: local, localPorts: localPorts) == .none)
        // Our IP with another port is a NAT on this host, and one relay cannot say which kind.
        let translated = SocketAddress(ip: hostLAN, port: 6000)
        #expect(NetcheckReport.classify(mapped: [translated], localAddresses: local, localPorts: localPorts) == .unknown)
    }

    @Test("behind a NAT with one relay answering there is nothing to compare: unknown")
    func oneTranslatedRelayIsUnknown() {
        #expect(NetcheckReport.classify(mapped: [v4(1, 40000)], localAddresses: local, localPorts: localPorts) == .unknown)
        #expect(NetcheckReport.classify(mapped: [], localAddresses: local, localPorts: localPorts) == .unknown)
    }

    @Test("families are judged apart: untranslated IPv6 beside NATed IPv4 reports the IPv4 NAT")
    func familiesAreSeparate() {
        let own6 = SocketAddress(ip: host6, port: 5001)
        #expect(NetcheckReport.classify(mapped: [v4(1, 40000), own6, v4(1, 40000)], localAddresses: local,
                                        localPorts: localPorts) == .endpointIndependent)
        #expect(NetcheckReport.classify(mapped: [v4(1, 40000), own6, v4(1, 40002)], localAddresses: local,
                                        localPorts: localPorts) == .endpointDependent)
        let own4 = SocketAddress(ip: hostLAN, port: 5000)
        #expect(NetcheckReport.classify(mapped: [own4, own6], localAddresses: local, localPorts: localPorts) == .none)
    }

    @Test("the preferred relay has the lowest median RTT; unreachable relays never win; ties go to the first")
    func preferredRelay() {
        let r = NetcheckReport(
            samples: [samples(relayA, rtts: [80, 81, 82], mapped: v4(1, 1)), samples(relayB, rtts: [], mapped: nil, sent: 6),
                      samples(relay6, rtts: [10, 11, 12], mapped: SocketAddress(ip: host6, port: 5001))],
            localAddresses: local, localPorts: localPorts)
        #expect(r.preferredRelay == relay6)
        let tie = NetcheckReport(samples: [samples(relayA, rtts: [5], mapped: v4(1, 1)), samples(relayB, rtts: [5], mapped: v4(1, 1))],
                                 localAddresses: local, localPorts: localPorts)
        #expect(tie.preferredRelay == relayA)
        let none = NetcheckReport(samples: [samples(relayB, rtts: [], mapped: nil, sent: 6)], localAddresses: local,
                                  localPorts: localPorts)
        #expect(none.preferredRelay == nil)
        #expect(none.mapping == .unknown)
    }

    @Test("JSON is one object with null for an unreachable relay")
    func json() {
        var a = samples(relayA, rtts: [5, 6, 7], mapped: v4(1, 40000))
        a.rtts = [.microseconds(5_512), .microseconds(5_600), .microseconds(5_400)]
        let r = NetcheckReport(samples: [a, samples(relayB, rtts: [], mapped: nil, sent: 6),
                                         samples(relay6, rtts: [9], mapped: SocketAddress(ip: host6, port: 5001))],
                               localAddresses: local, localPorts: localPorts)
        #expect(r.json == """
            {"relays": [{"address": "198.18.0.10:3478", "rtt_ms": 5.512, "mapped": "203.0.113.1:40000"}, \
            {"address": "198.18.0.11:3478", "rtt_ms": null, "mapped": null}, \
            {"address": "[2001:db8::10]:3478", "rtt_ms": 9.000, "mapped": "[2001:db8::2]:5001"}], \
            "mapping": "unknown", "preferred_relay": "198.18.0.10:3478"}
            """)
        let none = NetcheckReport(samples: [samples(relayB, rtts: [], mapped: nil)], localAddresses: local, localPorts: localPorts)
        #expect(none.json.hasSuffix("\"mapping\": \"unknown\", \"preferred_relay\": null}"))
    }

    @Test("text names each relay, then the mapping and the preferred relay")
    func text() {
        let r = NetcheckReport(samples: [samples(relayA, rtts: [5, 6, 7], mapped: v4(1, 40000)),
                                         samples(relayB, rtts: [40, 41, 42], mapped: v4(1, 40000), sent: 4),
                                         samples(SocketAddress(IPv4Address(127, 0, 0, 1), 9), rtts: [], mapped: nil, sent: 6)],
                               localAddresses: local, localPorts: localPorts)
        #expect(r.text == """
            relay 198.18.0.10:3478: rtt 6.0 ms, mapped 203.0.113.1:40000 (3/3 answered)
            relay 198.18.0.11:3478: rtt 41.0 ms, mapped 203.0.113.1:40000 (3/4 answered)
            relay 127.0.0.1:9: unreachable (0/6 answered)
            mapping: endpoint-independent
            preferred relay: 198.18.0.10:3478
            """)
    }

    @Test("fixed-point formatting rounds and pads")
    func formatting() {
        #expect(NetcheckReport.format(5.5124, decimals: 3) == "5.512")
        #expect(NetcheckReport.format(0.0456, decimals: 3) == "0.046")
        #expect(NetcheckReport.format(40.96, decimals: 1) == "41.0")
        #expect(NetcheckReport.format(12.0, decimals: 0) == "12")
    }
}
