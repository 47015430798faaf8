import Testing

@testable import STUN

@Suite("Transaction IDs")
struct TransactionIDTests {
    @Test("random IDs do not repeat")
    func uniqueness() {
        var seen = Set<TransactionID>()
        for _ in 0..<20_000 { seen.insert(.random()) }
        #expect(seen.count == 20_000)
        // Every byte position varies.
        let samples = (0..<64).map { _ in TransactionID.random().bytes }
        for i in 0..<12 {
            #expect(Set(samples.map { $0[i] }).count > 1)
        }
    }

    @Test("bytes round-trip and print as hex")
    func bytes() {
        let raw: [UInt8] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae]
        var id = TransactionID(bytes: raw)
        #expect(id.bytes == raw)
        #expect(id.description == "b7e7a701bc34d686fa87dfae")
        #expect(TransactionID(bytes: raw[...]) == id)
        id.bytes = [UInt8](repeating: 1, count: 12)
        #expect(id.bytes == [UInt8](repeating: 1, count: 12))
        #expect(id != TransactionID(bytes: raw))
    }
}
