import FZControl
import FZCore
import Testing

@Suite("Control codec")
struct ControlCodecTests {
    static let key = try! WireGuardKey(base64: "KuyKIFJh1/Uvv9grDFwKzOwsk6o/jUAPG4/ojxSr/7A=")

    @Test("the envelope sits beside the body's snake_case fields, and decodes back")
    func envelope() throws {
        let m = ToGateway.revoke(Revoke(clientId: ClientID("cli_1"), resourceId: ResourceID("res_1")))
        let text = ControlCodec.encode(m)
        #expect(text == #"{"client_id":"cli_1","resource_id":"res_1","type":"revoke","v":1}"#)
        #expect(try ControlCodec.decode(ToGateway.self, from: text, .rejectUnknownFields) == m)
    }

    @Test("refusals carry the protocol's codes and name the field")
    func refusals() {
        func code<M: ControlMessage>(_: M.Type, _ text: String, _ s: ControlCodec.Strictness = .rejectUnknownFields) -> String? {
            do { _ = try ControlCodec.decode(M.self, from: text, s); return nil } catch { return error.code + ": " + error.message }
        }
        #expect(code(FromClient.self, "nope") == "malformed: not a JSON object")
        #expect(code(FromClient.self, #"{"v":2,"type":"ping"}"#) == "unsupported_version: expected v: 1")
        #expect(code(FromClient.self, #"{"v":"1","type":"ping"}"#) == "malformed: v and type must be a number and a string")
        #expect(code(FromClient.self, #"{"v":1,"type":"authorized","request_id":"r"}"#) == "unknown_type: clients cannot send authorized")
        #expect(code(FromClient.self, #"{"v":1,"type":"request_access"}"#) == "malformed: resource_id is required")
        #expect(code(FromClient.self, #"{"v":1,"type":"request_access","resource_id":1}"#) == "malformed: resource_id has the wrong type")
        #expect(code(FromGateway.self, #"{"v":1,"type":"authorized","request_id":"\#(String(repeating: "a", count: 129))"}"#)
            == "malformed: request_id must be 1-128 bytes")
        // Nested unknown fields are found too; unknown fields are tolerated where asked for.
        let presence = #"{"v":1,"type":"presence","gateway_id":"gw_1","online":true,"relay":{"id":"r","name":"n","region":"eu","addresses":[],"username":"u","password":"p","expires_at":1,"colour":"red"}}"#
        #expect(code(ToClient.self, presence) == "malformed: relay.colour is not a known field")
        #expect(code(ToClient.self, presence, .ignoreUnknownFields) == nil)
        // Values are checked: a key of the wrong length, an address that is none.
        let granted = #"{"v":1,"type":"init","client_id":"c","actor_id":"a","tunnel":{"ipv4":"100.64.0.300","ipv6":"fd00::1"},"resources":[],"relays":[]}"#
        #expect(code(ToClient.self, granted)?.hasPrefix("malformed: tunnel.ipv4") == true)
    }

    @Test("secrets never print: preshared keys and the TURN secret describe themselves redacted")
    func redaction() throws {
        let psk = PresharedKey.random()
        #expect(psk.bytes.count == 32)
        #expect("\(psk)" == "<preshared key>")
        let secret = Secret("s3cr3t")
        let relayInit = RelayInit(relayId: RelayID("relay_1"), name: "r", region: "eu", addresses: ["198.18.0.1:3478"], turnSecret: secret)
        #expect(!"\(relayInit)".contains("s3cr3t"))
        #expect(!"\(psk)".contains(psk.base64))
        #expect(throws: ValidationError.self) { try PresharedKey(base64: "AAAA") }
    }
}
