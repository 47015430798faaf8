import FZControl
import Foundation
import Hummingbird
import HummingbirdTesting
import HummingbirdWSClient
import Logging
import NIOWebSocket
import Portal
import Prometheus
import Testing
@testable import FZPortal

@Suite("Shutdown and command line")
struct ShutdownTests {
    @Test("goingAway tells every peer to reconnect and closes it with 1001; later peers get the same at once")
    func goingAway() async throws {
        let h = try await ControlHarness()
        defer { h.api.tmp.cleanup() }
        let control = ControlConfiguration(heartbeat: .seconds(5))
        let broker = Broker(store: h.store, clock: WallClock { Fixture.now }, config: control)
        let router = PortalApplication.router(
            store: h.store, clock: WallClock { Fixture.now }, readiness: h.api.readiness, registry: PrometheusCollectorRegistry(),
            broker: broker, control: control)
        let app = PortalApplication.application(router: router, host: "127.0.0.1", port: 0, logger: Logger(label: "test"), control: control)
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let (gw, _) = try await h.gateway(port, key: 1)
            let (cl, _) = try await h.client(port, key: 2)
            #expect(await broker.connectedPeers == 2)
            await broker.goingAway()
            for peer in [gw, cl] {
                _ = try await peer.next("reconnect")
                #expect(await peer.closed())
                let frame = try await peer.task.value
                #expect(frame?.closeCode == .goingAway)
            }
            let (late, _) = try await h.client(port, key: 3)
            _ = try await late.next("reconnect")
            #expect(await late.closed())
            var tries = 0
            while await broker.connectedPeers > 0, tries < 200 {
                tries += 1
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(await broker.connectedPeers == 0)
        }
    }

    @Test("--listen and --expires-in parsing")
    func parsing() {
        #expect(PortalCommand.Serve.parseListen("127.0.0.1:8080")! == ("127.0.0.1", 8080))
        #expect(PortalCommand.Serve.parseListen("[::1]:0")! == ("::1", 0))
        for bad in ["nonsense", "127.0.0.1:99999", ":80", "[]:80", "host:"] { #expect(PortalCommand.Serve.parseListen(bad) == nil) }
        #expect(DurationText.seconds("3600") == 3600)
        #expect(DurationText.seconds("90s") == 90)
        #expect(DurationText.seconds("30m") == 1800)
        #expect(DurationText.seconds("12h") == 43200)
        #expect(DurationText.seconds("7d") == 604800)
        for bad in ["", "h", "0", "-5", "soon", "1w"] { #expect(DurationText.seconds(bad) == nil) }
    }
}
