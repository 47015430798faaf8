import FZControl
import Foundation
import Hummingbird
import Portal

/// The admin REST API under `/api/v1` (see docs/api.md). Every route needs an admin token.
struct AdminAPI: Sendable {
    let store: any PortalStore
    let clock: WallClock
    /// Called with the policies a deletion removed, so live authorizations can be revoked.
    let policiesRemoved: @Sendable ([Policy]) async -> Void
    /// Called after any change to actors, groups, memberships, sites, resources or policies, so
    /// connected clients hear of resources they may now see or no longer see.
    var changed: @Sendable () async -> Void = {}
    /// Called with a token the API revoked, so connections authenticated with it are closed.
    var tokenRevoked: @Sendable (TokenID) async -> Void = { _ in }

    func register(on router: Router<PortalContext>, authenticator: TokenAuthenticator) {
        let api = router.group("api/v1")
            .add(middleware: APIErrorMiddleware())
            .add(middleware: AdminAuthMiddleware(authenticator: authenticator))

        api.post("actors") { req, ctx in
            let b = try await decode(CreateActorBody.self, req, ctx)
            let a = PortalActor(id: .random(prefix: "act"), name: try Names.validate(b.name), kind: b.kind ?? .user)
            try await store.insert(actor: a)
            return JSONResponse(status: .created, value: a)
        }
        api.get("actors") { _, _ in try await store.actors() }
        api.delete("actors/:id") { _, ctx in try await deleted(store.deleteActor(ActorID(ctx.parameters.require("id"))), "actor") }

        api.post("groups") { req, ctx in
            let b = try await decode(NameBody.self, req, ctx)
            let g = Group(id: .random(prefix: "grp"), name: try Names.validate(b.name))
            try await store.insert(group: g)
            return JSONResponse(status: .created, value: g)
        }
        api.get("groups") { _, _ in try await store.groups() }
        api.delete("groups/:id") { _, ctx in try await deleted(store.deleteGroup(GroupID(ctx.parameters.require("id"))), "group") }

        api.post("groups/:id/members") { req, ctx in
            let b = try await decode(AddMemberBody.self, req, ctx)
            let m = Membership(groupId: GroupID(try ctx.parameters.require("id")), actorId: ActorID(b.actorId))
            try await store.insert(membership: m)
            await changed()
            return JSONResponse(status: .created, value: m)
        }
        api.get("memberships") { _, _ in try await store.memberships() }
        api.delete("groups/:id/members/:actor") { _, ctx in
            let m = Membership(groupId: GroupID(try ctx.parameters.require("id")), actorId: ActorID(try ctx.parameters.require("actor")))
            return try await deleted(store.deleteMembership(m), "membership")
        }

        api.post("sites") { req, ctx in
            let b = try await decode(NameBody.self, req, ctx)
            let s = Site(id: .random(prefix: "site"), name: try Names.validate(b.name))
            try await store.insert(site: s)
            return JSONResponse(status: .created, value: s)
        }
        api.get("sites") { _, _ in try await store.sites() }
        api.delete("sites/:id") { _, ctx in try await deleted(store.deleteSite(SiteID(ctx.parameters.require("id"))), "site") }

        api.post("resources") { req, ctx in
            let b = try await decode(CreateResourceBody.self, req, ctx)
            guard (b.filters ?? []).count <= Resource.maxFilters else {
                throw ValidationError(field: "filters", reason: "at most \(Resource.maxFilters) filters per resource")
            }
            let r = Resource(
                id: .random(prefix: "res"), siteId: SiteID(b.siteId), name: try Names.validate(b.name), address: b.address,
                filters: b.filters ?? [])
            try await store.insert(resource: r)
            await changed()
            return JSONResponse(status: .created, value: r)
        }
        api.get("resources") { _, _ in try await store.resources() }
        api.delete("resources/:id") { _, ctx in
            try await deleted(store.deleteResource(ResourceID(ctx.parameters.require("id"))), "resource")
        }

        api.post("policies") { req, ctx in
            let b = try await decode(CreatePolicyBody.self, req, ctx)
            let p = Policy(
                id: .random(prefix: "pol"), groupId: GroupID(b.groupId), resourceId: ResourceID(b.resourceId),
                conditions: b.conditions ?? PolicyConditions())
            try await store.insert(policy: p)
            await changed()
            return JSONResponse(status: .created, value: p)
        }
        api.get("policies") { _, _ in try await store.policies() }
        api.delete("policies/:id") { _, ctx in try await deleted(store.deletePolicy(PolicyID(ctx.parameters.require("id"))), "policy") }

        api.post("tokens") { req, ctx in
            let b = try await decode(CreateTokenBody.self, req, ctx)
            try await checkSubject(b)
            let issued = try IssuedToken.issue(name: b.name, scope: b.scope, subject: b.subject, now: clock.now(), expiresAt: b.expiresAt)
            try await store.insert(token: issued.token)
            return JSONResponse(status: .created, value: CreatedToken(token: TokenView(issued.token), secret: issued.secret.presented))
        }
        api.get("tokens") { _, _ in try await store.tokens().map(TokenView.init) }
        api.delete("tokens/:id") { _, ctx in
            let id = TokenID(try ctx.parameters.require("id"))
            let status = try await deleted(store.revokeToken(id, at: clock.now()), "token", notify: false)
            await tokenRevoked(id)
            return status
        }

        api.get("gateways") { _, _ in try await store.gateways() }
        api.get("relays") { _, _ in try await store.relays() }
        api.get("clients") { _, _ in try await store.clients() }
    }

    /// The body as `T`, strictly: unknown keys are refused (400 naming the key), so a misspelt
    /// field is never silently ignored.
    private func decode<T: StrictlyKeyed>(_ type: T.Type, _ req: Request, _ ctx: PortalContext) async throws -> T {
        var req = req
        let buffer = try await req.collectBody(upTo: ctx.maxUploadSize)
        let data = Data(buffer.readableBytesView)
        do {
            let body = try JSONCoding.decoder.decode(T.self, from: data)
            _ = try JSONCoding.decoder.decode(StrictKeys<T>.self, from: data)
            return body
        } catch let e as DecodingError {
            // Foundation's decoder calls a number that does not fit its type "not valid JSON";
            // name the field instead when the body parses as JSON.
            if e.fieldPath == nil, let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                let key = object.keys.sorted().first(where: { k in
                    (object[k] as? NSNumber).map { abs($0.doubleValue) >= 9.2e18 } ?? false
                })
            {
                throw APIError.invalid(field: key, "is out of range")
            }
            throw APIError.decoding(e)
        }
    }

    private func deleted(_ d: Deletion, _ what: String, notify: Bool = true) async throws -> HTTPResponse.Status {
        guard d.found else { throw APIError.notFound(what) }
        if !d.removedPolicies.isEmpty { await policiesRemoved(d.removedPolicies) }
        for token in d.revokedTokens { await tokenRevoked(token) }
        if notify { await changed() }
        return .noContent
    }

    /// Site and client tokens must name an existing site or actor.
    private func checkSubject(_ b: CreateTokenBody) async throws {
        guard let subject = b.subject else { return }
        switch b.scope {
        case .site: if try await store.site(SiteID(subject)) == nil { throw APIError.invalid(field: "subject", "no such site") }
        case .client: if try await store.actor(ActorID(subject)) == nil { throw APIError.invalid(field: "subject", "no such actor") }
        case .admin, .relay: break
        }
    }
}
