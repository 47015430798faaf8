import FZCore
import Synchronization
import TURN

/// What the relay's shards share: which shard owns each allocation's 5-tuple, allocation counts
/// for quotas across shards. Consulted on the control path
/// (Allocate, deletion) and for datagrams a shard does not hold an allocation for; never on a
/// shard's hot path.
final class ShardDirectory: Sendable {
    private struct State: Sendable {
        var owners: [FiveTuple: Int] = [:]
        var perUser: [String: Int] = [:]
        var connections = 0
        var connectionsPerIP: [IPAddress: Int] = [:]
    }

    private let state: Mutex<State>
    let shardCount: Int

    init(shards: Int) {
        shardCount = shards
        state = Mutex(State())
    }

    /// Records a new allocation for `shard` if the quotas allow it (0 = unlimited).
    func admit(_ tuple: FiveTuple, user: String, shard: Int, userQuota: Int, totalQuota: Int) -> Bool {
        state.withLock { s in
            if userQuota > 0 && s.perUser[user, default: 0] >= userQuota { return false }
            if totalQuota > 0 && s.owners.count >= totalQuota { return false }
            guard s.owners[tuple] == nil else { return false }
            s.owners[tuple] = shard
            s.perUser[user, default: 0] += 1
            return true
        }
    }

    func release(_ tuple: FiveTuple, user: String) {
        state.withLock { s in
            guard s.owners.removeValue(forKey: tuple) != nil else { return }
            let n = s.perUser[user, default: 1] - 1
            s.perUser[user] = n > 0 ? n : nil
        }
    }

    /// Counts a new TCP client connection if the limits allow it (accept is the control path).
    func admitConnection(_ ip: IPAddress, maxTotal: Int, maxPerIP: Int) -> Bool {
        state.withLock { s in
            guard s.connections < maxTotal, s.connectionsPerIP[ip, default: 0] < maxPerIP else { return false }
            s.connections += 1
            s.connectionsPerIP[ip, default: 0] += 1
            return true
        }
    }

    func releaseConnection(_ ip: IPAddress) {
        state.withLock { s in
            guard let n = s.connectionsPerIP[ip] else { return }
            s.connections -= 1
            s.connectionsPerIP[ip] = n > 1 ? n - 1 : nil
        }
    }

    var totalConnections: Int { state.withLock { $0.connections } }

    func owner(of tuple: FiveTuple) -> Int? { state.withLock { $0.owners[tuple] } }

    var totalAllocations: Int { state.withLock { $0.owners.count } }
}
