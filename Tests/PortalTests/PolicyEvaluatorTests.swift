import FZControl
import FZCore
import Testing
@testable import Portal

@Suite("Policy evaluation")
struct PolicyEvaluatorTests {
    let engineers = GroupID("grp_eng")
    let sales = GroupID("grp_sales")
    let wiki = ResourceID("res_wiki")
    let db = ResourceID("res_db")
    /// Wednesday 2026-03-04 09:30 UTC.
    let wednesdayMorning = UnixTime(seconds: 1_772_616_600)

    @Test("a member of a granted group is allowed")
    func allowed() {
        let p = Policy(id: PolicyID("pol_1"), groupId: engineers, resourceId: wiki)
        let d = PolicyEvaluator.evaluate(resource: wiki, actorGroups: [engineers], source: nil, now: wednesdayMorning, policies: [p])
        #expect(d == .allowed(PolicyID("pol_1")))
    }

    @Test("without a policy for one of the actor's groups access is forbidden")
    func forbidden() {
        let policies = [
            Policy(id: PolicyID("pol_1"), groupId: engineers, resourceId: wiki),
            Policy(id: PolicyID("pol_2"), groupId: sales, resourceId: db),
        ]
        #expect(PolicyEvaluator.evaluate(resource: wiki, actorGroups: [sales], source: nil, now: wednesdayMorning, policies: policies)
            == .denied(.forbidden))
        #expect(PolicyEvaluator.evaluate(resource: db, actorGroups: [], source: nil, now: wednesdayMorning, policies: policies)
            == .denied(.forbidden))
    }

    @Test("a source CIDR condition admits only sources inside it, including IPv4-mapped ones")
    func sourceCIDR() {
        let p = Policy(
            id: PolicyID("pol_1"), groupId: engineers, resourceId: wiki,
            conditions: PolicyConditions(sourceCidrs: [CIDR("203.0.113.0/24")!]))
        func eval(_ s: String?) -> PolicyDecision {
            PolicyEvaluator.evaluate(resource: wiki, actorGroups: [engineers], source: s.flatMap(IPAddress.init), now: wednesdayMorning, policies: [p])
        }
        #expect(eval("203.0.113.9") == .allowed(PolicyID("pol_1")))
        #expect(eval("::ffff:203.0.113.9") == .allowed(PolicyID("pol_1")))
        #expect(eval("198.51.100.1") == .denied(.forbidden))
        #expect(eval(nil) == .denied(.forbidden))
    }

    @Test("a time window admits only the listed days and hours in UTC")
    func timeWindow() throws {
        let window = try TimeWindow(days: [.monday, .wednesday], startMinute: 8 * 60, endMinute: 18 * 60)
        let p = Policy(id: PolicyID("pol_1"), groupId: engineers, resourceId: wiki, conditions: PolicyConditions(timeWindow: window))
        func eval(_ t: UnixTime) -> PolicyDecision {
            PolicyEvaluator.evaluate(resource: wiki, actorGroups: [engineers], source: nil, now: t, policies: [p])
        }
        #expect(eval(wednesdayMorning) == .allowed(PolicyID("pol_1")))
        #expect(eval(wednesdayMorning + .seconds(9 * 3600)) == .denied(.forbidden))  // 18:30
        #expect(eval(wednesdayMorning + .seconds(86_400)) == .denied(.forbidden))  // Thursday
        #expect(eval(UnixTime(seconds: 1_772_616_600 - 90 * 60)) == .allowed(PolicyID("pol_1")))  // 08:00 sharp
    }

    @Test("one policy whose conditions hold is enough when another's fail")
    func anyPolicySuffices() {
        let strict = Policy(
            id: PolicyID("pol_a"), groupId: engineers, resourceId: wiki,
            conditions: PolicyConditions(sourceCidrs: [CIDR("10.0.0.0/8")!]))
        let open = Policy(id: PolicyID("pol_b"), groupId: sales, resourceId: wiki)
        let d = PolicyEvaluator.evaluate(
            resource: wiki, actorGroups: [engineers, sales], source: IPAddress("192.0.2.1"), now: wednesdayMorning, policies: [strict, open])
        #expect(d == .allowed(PolicyID("pol_b")))
    }

    @Test("weekdays and minutes are computed in UTC, also before 1970")
    func calendar() {
        #expect(UnixTime(seconds: 0).weekday == .thursday)
        #expect(UnixTime(seconds: -1).weekday == .wednesday)
        #expect(UnixTime(seconds: -1).minuteOfDay == 1439)
        #expect(wednesdayMorning.weekday == .wednesday)
        #expect(wednesdayMorning.minuteOfDay == 9 * 60 + 30)
    }

    @Test("time windows must start before they end")
    func invalidWindow() {
        #expect(throws: ValidationError.self) { try TimeWindow(startMinute: 600, endMinute: 600) }
        #expect(throws: ValidationError.self) { try TimeWindow(startMinute: 1320, endMinute: 60) }
    }
}
