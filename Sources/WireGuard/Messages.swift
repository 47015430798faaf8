/// Wire formats of the four message types (whitepaper §5.4.2-§5.4.7). Every message starts with
/// a type byte and three zero bytes; all integers are little-endian. Parsing is strict: exact
/// sizes for handshake messages, a nonzero reserved byte is an unknown type.
enum MessageType: UInt8 {
    case initiation = 1
    case response = 2
    case cookieReply = 3
    case transport = 4

    /// The type of `bytes`, or nil for anything that is not one of the four messages at its
    /// required size.
    static func classify(_ bytes: UnsafeRawBufferPointer) -> MessageType? {
        guard bytes.count >= 4, bytes[1] == 0, bytes[2] == 0, bytes[3] == 0,
              let type = MessageType(rawValue: bytes[0])
        else { return nil }
        switch type {
        case .initiation: return bytes.count == Layout.Initiation.size ? type : nil
        case .response: return bytes.count == Layout.Response.size ? type : nil
        case .cookieReply: return bytes.count == Layout.CookieReply.size ? type : nil
        case .transport: return bytes.count >= Layout.Transport.minimumSize ? type : nil
        }
    }
}

/// Field offsets and sizes.
enum Layout {
    /// §5.4.2: type, sender, ephemeral, static (32 + tag), timestamp (12 + tag), mac1, mac2.
    enum Initiation {
        static let sender = 4
        static let ephemeral = 8
        static let encryptedStatic = 40
        static let encryptedTimestamp = 88
        static let mac1 = 116
        static let mac2 = 132
        static let size = 148
    }

    /// §5.4.3: type, sender, receiver, ephemeral, empty (tag only), mac1, mac2.
    enum Response {
        static let sender = 4
        static let receiver = 8
        static let ephemeral = 12
        static let encryptedNothing = 44
        static let mac1 = 60
        static let mac2 = 76
        static let size = 92
    }

    /// §5.4.7: type, receiver, 24-byte nonce, encrypted cookie (16 + tag).
    enum CookieReply {
        static let receiver = 4
        static let nonce = 8
        static let encryptedCookie = 32
        static let size = 64
    }

    /// §5.4.6: type, receiver, 64-bit counter, encrypted packet (at least the tag).
    enum Transport {
        static let receiver = 4
        static let counter = 8
        static let payload = 16
        static let headerSize = 16
        static let minimumSize = 32
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always)
    func u32(at offset: Int) -> UInt32 { UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }

    @inline(__always)
    func u64(at offset: Int) -> UInt64 { UInt64(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }

    @inline(__always)
    func slice(_ offset: Int, _ count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[offset..<(offset + count)])
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func storeU32(_ value: UInt32, at offset: Int) { storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self) }

    @inline(__always)
    func storeU64(_ value: UInt64, at offset: Int) { storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self) }

    /// Type byte and three reserved zero bytes.
    @inline(__always)
    func storeHeader(_ type: MessageType) { storeU32(UInt32(type.rawValue), at: 0) }

    func store(_ bytes: some RawBytes, at offset: Int) {
        bytes.withRawBytes { (baseAddress! + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    @inline(__always)
    func slice(_ offset: Int, _ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: self[offset..<(offset + count)])
    }
}

/// The fields of a handshake initiation other than the MACs (§5.4.2).
struct InitiationFields {
    var sender: UInt32
    var ephemeral: PublicKey
    var encryptedStatic: [UInt8]
    var encryptedTimestamp: [UInt8]

    init(sender: UInt32, ephemeral: PublicKey, encryptedStatic: [UInt8], encryptedTimestamp: [UInt8]) {
        self.sender = sender
        self.ephemeral = ephemeral
        self.encryptedStatic = encryptedStatic
        self.encryptedTimestamp = encryptedTimestamp
    }

    /// `bytes` is a whole initiation (classified already).
    init(parsing bytes: UnsafeRawBufferPointer) {
        typealias L = Layout.Initiation
        sender = bytes.u32(at: L.sender)
        ephemeral = PublicKey(copying: bytes.slice(L.ephemeral, 32))
        encryptedStatic = Array(bytes.slice(L.encryptedStatic, 48))
        encryptedTimestamp = Array(bytes.slice(L.encryptedTimestamp, 28))
    }

    /// Writes everything but the MACs into the first 148 bytes of `out`; the MACs are zeroed.
    func write(into out: UnsafeMutableRawBufferPointer) {
        typealias L = Layout.Initiation
        out.slice(0, L.size).initializeMemory(as: UInt8.self, repeating: 0)
        out.storeHeader(.initiation)
        out.storeU32(sender, at: L.sender)
        out.store(ephemeral, at: L.ephemeral)
        out.store(encryptedStatic, at: L.encryptedStatic)
        out.store(encryptedTimestamp, at: L.encryptedTimestamp)
    }
}

/// The fields of a handshake response other than the MACs (§5.4.3).
struct ResponseFields {
    var sender: UInt32
    var receiver: UInt32
    var ephemeral: PublicKey
    var encryptedNothing: [UInt8]

    init(sender: UInt32, receiver: UInt32, ephemeral: PublicKey, encryptedNothing: [UInt8]) {
        self.sender = sender
        self.receiver = receiver
        self.ephemeral = ephemeral
        self.encryptedNothing = encryptedNothing
    }

    init(parsing bytes: UnsafeRawBufferPointer) {
        typealias L = Layout.Response
        sender = bytes.u32(at: L.sender)
        receiver = bytes.u32(at: L.receiver)
        ephemeral = PublicKey(copying: bytes.slice(L.ephemeral, 32))
        encryptedNothing = Array(bytes.slice(L.encryptedNothing, 16))
    }

    func write(into out: UnsafeMutableRawBufferPointer) {
        typealias L = Layout.Response
        out.slice(0, L.size).initializeMemory(as: UInt8.self, repeating: 0)
        out.storeHeader(.response)
        out.storeU32(sender, at: L.sender)
        out.storeU32(receiver, at: L.receiver)
        out.store(ephemeral, at: L.ephemeral)
        out.store(encryptedNothing, at: L.encryptedNothing)
    }
}

/// Offsets of the two MACs in a handshake message of either type: `mac1` covers everything
/// before it (`msg_α`), `mac2` everything before it (`msg_β`) (§5.4.4).
struct MACOffsets {
    let mac1: Int
    let mac2: Int
    var size: Int { mac2 + 16 }

    static let initiation = MACOffsets(mac1: Layout.Initiation.mac1, mac2: Layout.Initiation.mac2)
    static let response = MACOffsets(mac1: Layout.Response.mac1, mac2: Layout.Response.mac2)

    static func of(_ type: MessageType) -> MACOffsets? {
        switch type {
        case .initiation: .initiation
        case .response: .response
        default: nil
        }
    }
}
