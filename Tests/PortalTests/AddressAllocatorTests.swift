import FZControl
import FZCore
import Testing
@testable import Portal

@Suite("Tunnel address allocation")
struct AddressAllocatorTests {
    @Test("the first addresses come from 100.64.0.0/11 and the fd00 /80")
    func first() {
        let a = AddressAllocator()
        #expect(a.nextIPv4(used: []) == IPv4Address("100.64.0.1"))
        #expect(a.nextIPv6(used: []) == IPv6Address("fd00:2021:1111::1"))
    }

    @Test("an address in use is never handed out again")
    func noReuse() {
        let a = AddressAllocator()
        var used4: Set<IPv4Address> = []
        var used6: Set<IPv6Address> = []
        for _ in 0..<300 {
            let v4 = a.nextIPv4(used: used4)!
            let v6 = a.nextIPv6(used: used6)!
            #expect(!used4.contains(v4) && !used6.contains(v6))
            #expect(a.ipv4Pool.contains(.v4(v4)) && a.ipv6Pool.contains(.v6(v6)))
            used4.insert(v4)
            used6.insert(v6)
        }
        #expect(used4.count == 300)
    }

    @Test("allocation continues after the highest address in use rather than filling gaps at once")
    func continuesAfterHighest() {
        let a = AddressAllocator()
        let used: Set = [IPv4Address("100.64.0.1")!, IPv4Address("100.64.0.5")!]
        #expect(a.nextIPv4(used: used) == IPv4Address("100.64.0.6"))
    }

    @Test("a full pool wraps to the gaps and then reports exhaustion")
    func smallPool() {
        let a = AddressAllocator(ipv4Pool: CIDR("10.9.0.0/30")!, ipv6Pool: CIDR("fd00::/126")!)
        #expect(a.nextIPv4(used: [IPv4Address("10.9.0.2")!]) == IPv4Address("10.9.0.1"))
        #expect(a.nextIPv4(used: [IPv4Address("10.9.0.1")!, IPv4Address("10.9.0.2")!]) == nil)
        #expect(a.nextIPv6(used: [IPv6Address("fd00::1")!, IPv6Address("fd00::2")!, IPv6Address("fd00::3")!]) == nil)
    }

    @Test("addresses outside the pool do not count as used")
    func outsideIgnored() {
        let a = AddressAllocator()
        #expect(a.nextIPv4(used: [IPv4Address("10.0.0.1")!]) == IPv4Address("100.64.0.1"))
    }
}
