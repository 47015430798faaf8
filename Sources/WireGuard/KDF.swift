/// The hash-based functions of whitepaper §5.4:
/// - `Hash(input) = Blake2s(input, 32)`
/// - `Mac(key, input) = Keyed-Blake2s(key, 16, input)`
/// - `Hmac(key, input) = Hmac-Blake2s(key, input, 32)`: RFC 2104 HMAC over unkeyed BLAKE2s with
///   its 64-byte block (not keyed BLAKE2s)
/// - `Kdf_n(key, input)`: τ0 = Hmac(key, input), τ1 = Hmac(τ0, 0x1),
///   τi = Hmac(τ0, τ(i-1) ‖ i); it returns τ1…τn. This is HKDF (RFC 5869) with BLAKE2s.
enum KDF {
    static let hashLength = 32
    static let macLength = 16

    /// `Hash(a ‖ b)`.
    static func hash(_ a: some RawBytes, _ b: some RawBytes) -> [UInt8] {
        var state = BLAKE2s()
        a.withRawBytes { state.update($0) }
        b.withRawBytes { state.update($0) }
        return state.finalize()
    }

    static func hash(_ a: some RawBytes) -> [UInt8] { hash(a, [UInt8]()) }

    /// `Mac(key, input)` into 16 bytes at `out`.
    static func mac(key: UnsafeRawBufferPointer, _ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) {
        var state = BLAKE2s(outputLength: macLength, key: key)
        state.update(input)
        state.finalize(into: out)
    }

    /// `Hmac(key, data ‖ suffix)` into 32 bytes at `out` (`suffix` is the counter byte of `Kdf`).
    static func hmac(key: UnsafeRawBufferPointer, _ data: UnsafeRawBufferPointer, suffix: UInt8? = nil,
                     into out: UnsafeMutableRawBufferPointer) {
        withUnsafeTemporaryAllocation(byteCount: BLAKE2s.blockSize + hashLength, alignment: 8) { scratch in
            let pad = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<BLAKE2s.blockSize])
            let inner = UnsafeMutableRawBufferPointer(rebasing: scratch[BLAKE2s.blockSize...])
            // K' is the key padded with zeros to a block, or its hash when longer than a block.
            pad.initializeMemory(as: UInt8.self, repeating: 0)
            if key.count > BLAKE2s.blockSize {
                var k = BLAKE2s()
                k.update(key)
                k.finalize(into: pad)
            } else if key.count > 0 {
                pad.copyMemory(from: key)
            }
            for i in 0..<BLAKE2s.blockSize { pad[i] ^= 0x36 }
            var h = BLAKE2s()
            h.update(UnsafeRawBufferPointer(pad))
            h.update(data)
            if var byte = suffix { withUnsafeBytes(of: &byte) { h.update($0) } }
            h.finalize(into: inner)
            for i in 0..<BLAKE2s.blockSize { pad[i] ^= 0x36 ^ 0x5C }
            var o = BLAKE2s()
            o.update(UnsafeRawBufferPointer(pad))
            o.update(UnsafeRawBufferPointer(inner))
            o.finalize(into: out)
            Sodium.zero(scratch)
        }
    }

    /// `Kdf_n(key, input)` for n = 1...3, each output a wiped-on-drop secret.
    static func kdf(_ n: Int, key: some RawBytes, input: some RawBytes) -> [SecretKey] {
        precondition((1...3).contains(n), "WireGuard derives 1-3 keys at a time")
        return withUnsafeTemporaryAllocation(byteCount: hashLength, alignment: 8) { tau0 in
            key.withRawBytes { k in input.withRawBytes { i in hmac(key: k, i, into: tau0) } }
            var outputs: [SecretKey] = []
            outputs.reserveCapacity(n)
            for index in 1...n {
                let previous = outputs.last
                let next = SecretKey { out in
                    if let previous {
                        previous.withRawBytes { hmac(key: UnsafeRawBufferPointer(tau0), $0, suffix: UInt8(index), into: out) }
                    } else {
                        hmac(key: UnsafeRawBufferPointer(tau0), UnsafeRawBufferPointer(start: nil, count: 0),
                             suffix: UInt8(index), into: out)
                    }
                }
                outputs.append(next)
            }
            Sodium.zero(tau0)
            return outputs
        }
    }

    static func kdf1(key: some RawBytes, input: some RawBytes) -> SecretKey {
        kdf(1, key: key, input: input)[0]
    }

    static func kdf2(key: some RawBytes, input: some RawBytes) -> (SecretKey, SecretKey) {
        let out = kdf(2, key: key, input: input)
        return (out[0], out[1])
    }

    static func kdf3(key: some RawBytes, input: some RawBytes) -> (SecretKey, SecretKey, SecretKey) {
        let out = kdf(3, key: key, input: input)
        return (out[0], out[1], out[2])
    }
}
