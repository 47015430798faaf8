import FZCore
import Testing

@testable import Connectivity

/// The NAT types of the matrix (RFC 4787): mapping × filtering, and no NAT at all.
enum MatrixNAT: String, CaseIterable, Sendable, CustomStringConvertible {
    case none = "none"
    case eimEIF = "EIM+EIF"
    case eimADF = "EIM+ADF"
    case eimAPDF = "EIM+APDF"
    case edmAPDF = "EDM+APDF"

    var description: String { rawValue }

    func nat(publicIP: String) -> IceNetwork.NAT? {
        switch self {
        case .none: nil
        case .eimEIF: IceNetwork.NAT(publicIP: publicIP, filtering: .endpointIndependent)
        case .eimADF: IceNetwork.NAT(publicIP: publicIP, filtering: .addressDependent)
        case .eimAPDF: IceNetwork.NAT(publicIP: publicIP, filtering: .addressAndPortDependent)
        case .edmAPDF: IceNetwork.NAT(publicIP: publicIP, dependent: true, filtering: .addressAndPortDependent)
        }
    }

    var dependentMapping: Bool { self == .edmAPDF }
    var portDependentFiltering: Bool { self == .eimAPDF || self == .edmAPDF }

    /// The outcome docs/connectivity.md states: relayed when both sides map endpoint-dependently,
    /// or one does while the other filters address-and-port-dependently; direct otherwise.
    static func expectRelayed(_ a: Self, _ b: Self) -> Bool {
        (a.dependentMapping && b.dependentMapping) || (a.dependentMapping && b.portDependentFiltering)
            || (b.dependentMapping && a.portDependentFiltering)
    }
}

private let pairs: [(MatrixNAT, MatrixNAT)] = MatrixNAT.allCases.flatMap { a in MatrixNAT.allCases.map { (a, $0) } }

/// The expected outcomes, as docs/connectivity.md shows them (rows: client, columns: gateway;
/// D direct, R relayed), in `MatrixNAT.allCases` order.
private let table = [
    //        none EIF  ADF  APDF EDM
    /* none */ "D    D    D    D    D",
    /* EIF  */ "D    D    D    D    D",
    /* ADF  */ "D    D    D    D    D",
    /* APDF */ "D    D    D    D    R",
    /* EDM  */ "D    D    D    R    R",
]

@Suite("NAT matrix (simulated): 25 pairs of RFC 4787 behaviours")
struct NATMatrixTests {
    @Test("the rule and the table agree")
    func tableMatchesTheRule() {
        for (i, a) in MatrixNAT.allCases.enumerated() {
            let row = table[i].split(separator: " ", omittingEmptySubsequences: true)
            for (j, b) in MatrixNAT.allCases.enumerated() {
                #expect((row[j] == "R") == MatrixNAT.expectRelayed(a, b), "\(a) × \(b)")
            }
        }
    }

    @Test("direct unless endpoint-dependent mapping meets endpoint-dependent mapping or port-dependent filtering",
          arguments: pairs)
    func matrix(_ client: MatrixNAT, _ gateway: MatrixNAT) throws {
        // 20 ms one way; behind a NAT the host has a private address, without one a public address.
        let hosts = [client == .none ? "192.0.2.10:5000" : "10.1.0.2:5000", gateway == .none ? "192.0.2.20:6000" : "10.2.0.2:6000"]
        var net = IceNetwork(hosts: [[hosts[0]], [hosts[1]]], relays: ["198.51.100.1:50000", "198.51.100.1:50001"],
                             nats: [client.nat(publicIP: "203.0.113.1"), gateway.nat(publicIP: "203.0.113.2")],
                             serverReflexive: true)
        net.delay = .milliseconds(20)
        let start = net.now
        net.run(seconds: 8)
        let nominated = try #require(net.agents[0].nominated, "client=\(client) gateway=\(gateway): nothing nominated")
        let relayed = MatrixNAT.expectRelayed(client, gateway)
        #expect(nominated.isRelayed == relayed, "client=\(client) gateway=\(gateway): \(nominated)")
        let agreed = net.agreeOnNominated()
        #expect(agreed, "client=\(client) gateway=\(gateway): \(nominated) vs \(String(describing: net.agents[1].nominated))")
        #expect(net.agents[1].selectedPair?.isRelayed == relayed)
        // Usable soon (RTT 40 ms): direct within 4 RTTs, relayed within 300 ms (measured: direct
        // 40-80 ms, relayed 150 ms, the wait for a direct pair included).
        let usable = try #require(net.firstSelected(0))
        #expect(usable - start <= .milliseconds(relayed ? 300 : 160), "client=\(client) gateway=\(gateway)")
        // And it stays: no flapping between classes once settled.
        let settled = net.selections(0).count
        net.run(seconds: 20)
        #expect(net.selections(0).count == settled, "client=\(client) gateway=\(gateway): \(net.selections(0))")
    }
}
