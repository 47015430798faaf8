import Testing

@testable import STUN

@Suite("Message types, methods and error codes")
struct MessageTypeTests {
    @Test("known method/class pairs interleave into the registered type codes", arguments: [
        (Method.binding, MessageClass.request, UInt16(0x0001)),
        (.binding, .indication, 0x0011),
        (.binding, .successResponse, 0x0101),
        (.binding, .errorResponse, 0x0111),
        (.allocate, .request, 0x0003),
        (.allocate, .successResponse, 0x0103),
        (.allocate, .errorResponse, 0x0113),
        (.refresh, .request, 0x0004),
        (.send, .indication, 0x0016),
        (.data, .indication, 0x0017),
        (.createPermission, .request, 0x0008),
        (.channelBind, .successResponse, 0x0109),
        (Method(rawValue: 0xFFF), .errorResponse, 0x3FFF),
        (Method(rawValue: 0x080), .request, 0x0200),
    ])
    func interleaving(method: Method, messageClass: MessageClass, raw: UInt16) {
        let type = MessageType(method: method, messageClass: messageClass)
        #expect(type.rawValue == raw)
        #expect(MessageType(rawValue: raw) == type)
    }

    @Test("every 14-bit type round-trips and types with a top bit set are rejected")
    func exhaustive() {
        for raw in UInt16(0)..<0x4000 {
            #expect(MessageType(rawValue: raw)?.rawValue == raw)
        }
        for raw: UInt16 in [0x4000, 0x8000, 0xC001, 0xFFFF] {
            #expect(MessageType(rawValue: raw) == nil)
        }
    }

    @Test("methods keep only twelve bits and describe themselves")
    func methods() {
        #expect(Method(rawValue: 0xF001) == .binding)
        #expect(Method.channelBind.description == "ChannelBind")
        #expect(Method(rawValue: 0x0AB).description == "Method(0xab)")
        #expect(MessageType(method: .allocate, messageClass: .errorResponse).description == "Allocate error response")
    }

    @Test("error codes carry the RFC reason phrases by default")
    func errorCodes() {
        #expect(ErrorCode.tryAlternate.code == 300)
        #expect(ErrorCode.badRequest.reason == "Bad Request")
        #expect(ErrorCode.unauthenticated == ErrorCode(401))
        #expect(ErrorCode.forbidden.code == 403)
        #expect(ErrorCode.unknownAttribute.code == 420)
        #expect(ErrorCode.allocationMismatch.code == 437)
        #expect(ErrorCode.staleNonce.reason == "Stale Nonce")
        #expect(ErrorCode.addressFamilyNotSupported.code == 440)
        #expect(ErrorCode.wrongCredentials.code == 441)
        #expect(ErrorCode.unsupportedTransportProtocol.code == 442)
        #expect(ErrorCode.peerAddressFamilyMismatch.code == 443)
        #expect(ErrorCode.allocationQuotaReached.code == 486)
        #expect(ErrorCode.roleConflict.code == 487 && ErrorCode.roleConflict.reason == "Role Conflict")
        #expect(ErrorCode.serverError.code == 500)
        #expect(ErrorCode.insufficientCapacity.reason == "Insufficient Capacity")
        #expect(ErrorCode(599).reason == "")
        #expect(ErrorCode(438, reason: "Nonce expired").reason == "Nonce expired")
        #expect(ErrorCode(438, reason: "Nonce expired") != .staleNonce)
    }
}
