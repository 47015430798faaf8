import FZCore
import FZLinux
import Testing

@Suite("local interface addresses (getifaddrs)")
struct LocalAddressesTests {
    @Test("loopback is listed, once, and only IP addresses are")
    func loopbackIsListed() throws {
        let all = try LocalAddresses.all()
        #expect(all.contains(.v4(.loopback)))
        #expect(Set(all).count == all.count)
    }
}
