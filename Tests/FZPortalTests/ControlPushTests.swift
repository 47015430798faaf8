import FZControl
import FZCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Portal
import Testing
@testable import FZPortal

@Suite("Control channel pushes (live WebSockets)")
struct ControlPushTests {
    /// Messages to one peer are ordered, so a `pong` as the very next message proves nothing
    /// else was queued for it before the ping.
    static func expectNothingQueued(_ p: ControlPeer) async throws {
        p.send(#"{"v":1,"type":"ping"}"#)
        #expect(try await p.nextAny(timeout: .seconds(1)).type == "pong")
    }

    @Test("a resource made visible by a new policy is pushed within 1 s to its group's clients only")
    func resourceUpdated() async throws {
        let h = try await ControlHarness()
        try await h.run { port, api in
            let (alice, _) = try await h.client(port, key: 1)
            let (mallory, _) = try await h.client(port, key: 3, token: h.malloryToken)
            let created = try await api.call(
                .post, "/api/v1/resources", token: h.api.admin,
                body: #"{"name": "wiki", "site_id": "site_a", "address": "10.0.1.5", "filters": ["tcp/443"]}"#)
            #expect(created.status == .created)
            let resID = try #require(created[string: "id"])
            try await Self.expectNothingQueued(alice)  // no policy grants it yet
            let policy = try await api.call(
                .post, "/api/v1/policies", token: h.api.admin, body: #"{"group_id": "grp_eng", "resource_id": "\#(resID)"}"#)
            #expect(policy.status == .created)
            let pushed = try await alice.next("resource_updated", timeout: .seconds(1))
            #expect(pushed.dict("resource")["id"] as? String == resID)
            #expect(pushed.dict("resource")["name"] as? String == "wiki")
            #expect(pushed.dict("resource")["filters"] as? [String] == ["tcp/443"])
            try await Self.expectNothingQueued(mallory)

            // Removing alice from the group hides both resources from her.
            #expect(try await api.call(.delete, "/api/v1/groups/grp_eng/members/act_alice", token: h.api.admin).status == .noContent)
            var removed: Set<String> = []
            for _ in 0..<2 { removed.insert(try #require(try await alice.next("resource_removed", timeout: .seconds(1))["resource_id"])) }
            #expect(removed == ["res_db", resID])
            try await Self.expectNothingQueued(mallory)
            alice.close()
            mallory.close()
        }
    }

    @Test("deleting a resource pushes resource_removed to clients that saw it and revokes at the gateway within 1 s")
    func resourceRemoved() async throws {
        let h = try await ControlHarness()
        try await h.run { port, api in
            let (gw, id) = try await h.gateway(port, key: 101)
            let (alice, initA) = try await h.client(port, key: 1)
            let (mallory, _) = try await h.client(port, key: 3, token: h.malloryToken)
            _ = try await grant(alice, [id: gw], expected: id)
            #expect(try await api.call(.delete, "/api/v1/resources/res_db", token: h.api.admin).status == .noContent)
            #expect(try await alice.next("resource_removed", timeout: .seconds(1))["resource_id"] == "res_db")
            let revoke = try await gw.next("revoke", timeout: .seconds(1))
            #expect(revoke["client_id"] == initA["client_id"])
            #expect(revoke["resource_id"] == "res_db")
            try await Self.expectNothingQueued(mallory)
            try await Self.expectNothingQueued(gw)  // revoked once only
            for p in [gw, alice, mallory] { p.close() }
        }
    }

    @Test("revoking a client token closes its connections within 1 s and revokes its authorizations; others stay")
    func tokenRevoked() async throws {
        let h = try await ControlHarness()
        try await h.run { port, api in
            let (gw, id) = try await h.gateway(port, key: 101)
            let (alice, initA) = try await h.client(port, key: 1)
            let (mallory, _) = try await h.client(port, key: 3, token: h.malloryToken)
            _ = try await grant(alice, [id: gw], expected: id)
            let token = try #require(try await h.store.tokens().first { $0.scope == .client && $0.subject == h.alice.id.rawValue })
            #expect(try await api.call(.delete, "/api/v1/tokens/\(token.id)", token: h.api.admin).status == .noContent)
            let error = try await alice.next("error", timeout: .seconds(1))
            #expect(error["code"] == "token_revoked")
            #expect(await alice.closed(timeout: .seconds(1)))
            let revoke = try await gw.next("revoke", timeout: .seconds(1))
            #expect(revoke["client_id"] == initA["client_id"])
            try await Self.expectNothingQueued(mallory)
            // The revoked token cannot connect again.
            let again = ControlPeer(url: ControlHarness.url(port, "client", ["public_key": Fixture.key(1).base64]), token: h.aliceToken)
            await #expect(throws: (any Error).self) { _ = try await again.task.value }

            // A revoked site token closes its gateway's connection too.
            let site = try #require(try await h.store.tokens().first { $0.scope == .site })
            #expect(try await api.call(.delete, "/api/v1/tokens/\(site.id)", token: h.api.admin).status == .noContent)
            #expect(try await gw.next("error", timeout: .seconds(1))["code"] == "token_revoked")
            #expect(await gw.closed(timeout: .seconds(1)))
            mallory.close()
        }
    }

    @Test("deleting an actor or a site revokes its tokens: its connections close within 1 s and cannot come back")
    func subjectDeleted() async throws {
        let h = try await ControlHarness()
        try await h.run { port, api in
            let (gw, _) = try await h.gateway(port, key: 101)
            let (alice, _) = try await h.client(port, key: 1)
            let (mallory, _) = try await h.client(port, key: 3, token: h.malloryToken)

            #expect(try await api.call(.delete, "/api/v1/actors/\(h.alice.id)", token: h.api.admin).status == .noContent)
            #expect(try await alice.next("error", timeout: .seconds(1))["code"] == "token_revoked")
            #expect(await alice.closed(timeout: .seconds(1)))
            try await Self.expectNothingQueued(mallory)  // another actor's connection stays
            let aliceTokens = try await h.store.tokens().filter { $0.subject == h.alice.id.rawValue }
            #expect(!aliceTokens.isEmpty && aliceTokens.allSatisfy { $0.revokedAt != nil })
            let again = ControlPeer(url: ControlHarness.url(port, "client", ["public_key": Fixture.key(1).base64]), token: h.aliceToken)
            await #expect(throws: (any Error).self) { _ = try await again.task.value }

            #expect(try await api.call(.delete, "/api/v1/sites/\(h.site.id)", token: h.api.admin).status == .noContent)
            #expect(try await gw.next("error", timeout: .seconds(1))["code"] == "token_revoked")
            #expect(await gw.closed(timeout: .seconds(1)))
            let gwAgain = ControlPeer(
                url: ControlHarness.url(port, "gateway", ["public_key": Fixture.key(101).base64, "name": "gw"]), token: h.siteToken)
            await #expect(throws: (any Error).self) { _ = try await gwAgain.task.value }
            mallory.close()
        }
    }
}
