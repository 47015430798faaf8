#if canImport(Glibc)
import Glibc
#endif
import CFZLinux
import FZCore
import Synchronization

/// An epoll loop run by one dedicated thread (never the Swift concurrency pool: on a 2-core machine
/// it has 2 threads, and a loop blocked in epoll_wait would stall unrelated tasks).
///
/// One iteration: wait for readiness until the owner's deadline, run the handlers of ready
/// descriptors (and work handed over with `execute`), call `timeoutHandler(now)` if the deadline has
/// passed, then `afterIterationHandler` (the place to flush send queues).
///
/// Descriptors are level-triggered: a handler may read one batch and return; if more is waiting,
/// epoll reports it again next iteration, after the other ready descriptors had their turn.
///
/// Threading: `register`, `modify`, `unregister` and the three handler properties are loop-confined —
/// use them on the loop thread (inside a handler or `execute`) or before `run()`/`start(name:)`.
/// `execute`, `stop` and `inEventLoop` may be called from any thread.
///
/// The loop is single-use: once `run()` has returned it cannot be run again.
public final class EventLoop: @unchecked Sendable {
    // `@unchecked Sendable` invariant: every `var` below is touched only by the thread inside `run()`,
    // or by one thread before `run()` starts (ordered by the thread start). The members other threads
    // reach are immutable (`epollFD`, `wakeFD`, `maxEvents`, `events`' address) or synchronized
    // (`queue` is a Mutex; `state`, `stopRequested` and `loopThread` are atomics).

    /// Asked once per iteration for the next instant `timeoutHandler` wants to run; `.distantFuture`
    /// (or nil) means none. Loop-confined.
    public var deadlineProvider: (() -> Timestamp)?
    /// Called with `MonotonicClock.now()` when the deadline returned by `deadlineProvider` has passed.
    /// It must move the deadline forward, or the loop spins. Loop-confined.
    public var timeoutHandler: ((Timestamp) -> Void)?
    /// Called once per iteration after handlers, tasks and timeouts ran. Loop-confined.
    public var afterIterationHandler: (() -> Void)?

    private struct Registration {
        var generation: UInt32
        var handler: (EpollEvents) -> Void
    }

    private struct TaskQueue {
        var work: [@Sendable () -> Void] = []
        var wakePending = false
    }

    private enum State: Int {
        case idle = 0, running = 1, finished = 2
    }

    private let epollFD: Int32
    private let wakeFD: Int32
    private let maxEvents: Int32 = 64
    private let events: UnsafeMutableRawPointer
    /// Indexed by descriptor (the kernel hands out the lowest free number, so the array stays as
    /// long as the highest descriptor registered): one array access per event, no hashing.
    @exclusivity(unchecked) private var registrations: [Registration?] = []
    /// Tags each registration so an event queued for a descriptor that was unregistered (and whose
    /// number was reused) in the same iteration is not delivered to the new handler. 0 is the wakeup.
    private var nextGeneration: UInt32 = 1
    private var runningWork: [@Sendable () -> Void] = []
    private let queue = Mutex(TaskQueue())
    private let state = Atomic<Int>(State.idle.rawValue)
    private let stopRequested = Atomic<Bool>(false)
    private let loopThread = Atomic<UInt>(0)

    public init() throws(SystemError) {
        let epollFD = try Syscall.check("epoll_create1") { cfz_epoll_create() }
        let wakeFD: Int32
        do {
            wakeFD = try Syscall.check("eventfd") { cfz_eventfd_create() }
        } catch {
            Syscall.close(epollFD)
            throw error
        }
        do {
            _ = try Syscall.check("epoll_ctl(ADD)") {
                cfz_epoll_ctl(epollFD, CFZ_EPOLL_CTL_ADD, wakeFD, CFZ_EPOLLIN, Self.wakeToken(wakeFD))
            }
        } catch {
            Syscall.close(wakeFD)
            Syscall.close(epollFD)
            throw error
        }
        self.epollFD = epollFD
        self.wakeFD = wakeFD
        events = .allocate(byteCount: cfz_epoll_event_size() * Int(maxEvents), alignment: 16)
        runningWork.reserveCapacity(64)
        queue.withLock { $0.work.reserveCapacity(64) }
    }

    deinit {
        Syscall.close(wakeFD)
        Syscall.close(epollFD)
        events.deallocate()
    }

    /// True on the thread currently inside `run()`.
    public var inEventLoop: Bool {
        let thread = loopThread.load(ordering: .acquiring)
        return thread != 0 && pthread_equal(thread, pthread_self()) != 0
    }

    private var isConfinedAccessAllowed: Bool {
        State(rawValue: state.load(ordering: .acquiring)) != .running || inEventLoop
    }

    // MARK: descriptors

    /// Watches `fd`; `handler` runs on the loop thread with what epoll reported. Errors and hangups are
    /// always reported. Registering a descriptor twice throws EEXIST.
    public func register(
        fd: Int32, readable: Bool = true, writable: Bool = false, handler: @escaping (EpollEvents) -> Void
    ) throws(SystemError) {
        precondition(isConfinedAccessAllowed, "EventLoop.register called off the loop thread while running")
        precondition(fd != wakeFD && fd != epollFD, "cannot register the loop's own descriptors")
        let generation = nextGeneration
        let mask = Self.mask(readable: readable, writable: writable)
        _ = try Syscall.check("epoll_ctl(ADD)") {
            cfz_epoll_ctl(epollFD, CFZ_EPOLL_CTL_ADD, fd, mask, Self.token(fd: fd, generation: generation))
        }
        nextGeneration = generation == .max ? 1 : generation + 1
        if Int(fd) >= registrations.count {
            registrations.append(contentsOf: repeatElement(nil, count: Int(fd) + 1 - registrations.count))
        }
        registrations[Int(fd)] = Registration(generation: generation, handler: handler)
    }

    /// Changes the readiness `fd` is watched for (e.g. add `writable` while a send queue is blocked).
    /// Throws ENOENT for a descriptor that is not registered.
    public func modify(fd: Int32, readable: Bool, writable: Bool) throws(SystemError) {
        precondition(isConfinedAccessAllowed, "EventLoop.modify called off the loop thread while running")
        guard let registration = registration(fd) else {
            throw SystemError(errno: ENOENT, call: "epoll_ctl(MOD)")
        }
        let mask = Self.mask(readable: readable, writable: writable)
        _ = try Syscall.check("epoll_ctl(MOD)") {
            cfz_epoll_ctl(epollFD, CFZ_EPOLL_CTL_MOD, fd, mask, Self.token(fd: fd, generation: registration.generation))
        }
    }

    /// Stops watching `fd`; its handler is released and not called again, even for an event already
    /// collected in this iteration. Call before closing the descriptor. Unknown descriptors are ignored.
    public func unregister(fd: Int32) {
        precondition(isConfinedAccessAllowed, "EventLoop.unregister called off the loop thread while running")
        guard registration(fd) != nil else { return }
        registrations[Int(fd)] = nil
        let rc = cfz_epoll_ctl(epollFD, CFZ_EPOLL_CTL_DEL, fd, 0, 0)
        if rc < 0 {
            let code = Glibc.errno
            // ENOENT/EBADF: the descriptor was already closed, which removed it from the epoll set.
            // Anything else (EINVAL, EPERM) means the registration bookkeeping is wrong.
            if code != ENOENT && code != EBADF {
                preconditionFailure("epoll_ctl(DEL) failed with errno \(code)")
            }
        }
    }

    // MARK: cross-thread

    /// Runs `work` on the loop thread, soon (FIFO with other `execute` calls). Callable from any thread,
    /// including the loop's own. Work handed over before `stop()` runs before `run()` returns; work handed
    /// over after `run()` returned is never run (it is released with the loop).
    public func execute(_ work: @escaping @Sendable () -> Void) {
        let mustWake = queue.withLock { q in
            q.work.append(work)
            defer { q.wakePending = true }
            return !q.wakePending
        }
        if mustWake { wake() }
    }

    /// Asks `run()` to return after the current iteration. Callable from any thread, any number of
    /// times, also before `run()` (which then returns at once).
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        wake()
    }

    // MARK: running

    /// Runs the loop on the calling thread until `stop()`.
    public func run() {
        let (exchanged, _) = state.compareExchange(
            expected: State.idle.rawValue, desired: State.running.rawValue, ordering: .acquiringAndReleasing)
        precondition(exchanged, "EventLoop.run() called twice")
        loopThread.store(pthread_self(), ordering: .releasing)
        defer {
            runQueuedWork()
            loopThread.store(0, ordering: .releasing)
            state.store(State.finished.rawValue, ordering: .releasing)
        }

        while !stopRequested.load(ordering: .acquiring) {
            let deadline = deadlineProvider?() ?? .distantFuture
            let timeout: Int32
            if deadline == .distantFuture {
                timeout = -1
            } else {
                let now = MonotonicClock.now()
                timeout = deadline <= now ? 0 : Self.milliseconds(until: deadline, from: now)
            }

            let ready = waitForEvents(timeout: timeout)
            for i in 0..<ready {
                let data = cfz_epoll_event_data(events, Int32(i))
                let mask = cfz_epoll_event_mask(events, Int32(i))
                dispatch(data: data, mask: mask)
            }

            if deadline != .distantFuture, let timeoutHandler {
                let now = MonotonicClock.now()
                if now >= deadline { timeoutHandler(now) }
            }
            afterIterationHandler?()
        }
    }

    /// Spawns a dedicated thread named `name` (first 15 bytes: the kernel's limit) that runs the loop.
    public func start(name: String) throws(SystemError) -> EventLoopThread {
        let context = Unmanaged.passRetained(ThreadContext(loop: self, name: name)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let context = Unmanaged<ThreadContext>.fromOpaque(raw!).takeRetainedValue()
            var name = Array(context.name.utf8.prefix(15)).map { CChar(bitPattern: $0) }
            name.append(0)
            // A name is a debugging aid; failing to set it is not worth stopping the loop for.
            _ = cfz_set_current_thread_name(name)
            context.loop.run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<ThreadContext>.fromOpaque(context).release()
            throw SystemError(errno: rc, call: "pthread_create")
        }
        return EventLoopThread(thread)
    }

    // MARK: private

    private final class ThreadContext {
        let loop: EventLoop
        let name: String
        init(loop: EventLoop, name: String) {
            self.loop = loop
            self.name = name
        }
    }

    private func waitForEvents(timeout: Int32) -> Int {
        let rc = cfz_epoll_wait(epollFD, events, maxEvents, timeout)
        if rc >= 0 { return Int(rc) }
        let code = Glibc.errno
        // EINTR: a signal arrived; the caller recomputes the timeout. Anything else (EBADF, EFAULT,
        // EINVAL) is a bug in this type.
        guard code == EINTR else { preconditionFailure("epoll_wait failed with errno \(code)") }
        return 0
    }

    @inline(__always)
    private func dispatch(data: UInt64, mask: UInt32) {
        let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data))
        let generation = UInt32(truncatingIfNeeded: data >> 32)
        if generation == 0 {
            drainWakeFD()
            runQueuedWork()
            return
        }
        guard let registration = registration(fd), registration.generation == generation else { return }
        registration.handler(EpollEvents(rawValue: mask))
    }

    @inline(__always)
    private func registration(_ fd: Int32) -> Registration? {
        fd >= 0 && Int(fd) < registrations.count ? registrations[Int(fd)] : nil
    }

    private func runQueuedWork() {
        queue.withLock { q in
            swap(&q.work, &runningWork)
            q.wakePending = false
        }
        for work in runningWork { work() }
        runningWork.removeAll(keepingCapacity: true)
    }

    private func wake() {
        var one: UInt64 = 1
        let rc = write(wakeFD, &one, 8)
        if rc < 0 {
            let code = Glibc.errno
            // EAGAIN: the counter is at its maximum, so a wakeup is pending anyway.
            guard code == EAGAIN || code == EINTR else { preconditionFailure("write(eventfd) failed with errno \(code)") }
            if code == EINTR { wake() }
        }
    }

    private func drainWakeFD() {
        var value: UInt64 = 0
        let rc = read(wakeFD, &value, 8)
        if rc < 0 {
            let code = Glibc.errno
            // EAGAIN: already drained (a stale readiness report). EINTR: the next iteration reads again.
            guard code == EAGAIN || code == EINTR else { preconditionFailure("read(eventfd) failed with errno \(code)") }
        }
    }

    private static func wakeToken(_ fd: Int32) -> UInt64 { UInt64(UInt32(bitPattern: fd)) }

    private static func token(fd: Int32, generation: UInt32) -> UInt64 {
        UInt64(generation) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    private static func mask(readable: Bool, writable: Bool) -> UInt32 {
        (readable ? CFZ_EPOLLIN : 0) | (writable ? CFZ_EPOLLOUT : 0)
    }

    /// Milliseconds to wait, rounded up so the loop never wakes just before the deadline and spins;
    /// timers therefore fire up to 1 ms late.
    private static func milliseconds(until deadline: Timestamp, from now: Timestamp) -> Int32 {
        let ns = deadline.nanoseconds - now.nanoseconds
        let ms = ns / 1_000_000 + (ns % 1_000_000 == 0 ? 0 : 1)
        return Int32(clamping: ms)
    }
}

/// The thread `EventLoop.start(name:)` spawned.
public final class EventLoopThread: Sendable {
    private let thread: pthread_t
    private let joined = Mutex(false)

    init(_ thread: pthread_t) { self.thread = thread }

    /// Waits for the loop to return (after `stop()`). Safe to call more than once and from several
    /// threads; must not be called from the loop thread itself.
    public func join() {
        precondition(pthread_equal(thread, pthread_self()) == 0, "EventLoopThread.join() called on its own thread")
        joined.withLock { done in
            guard !done else { return }
            let rc = pthread_join(thread, nil)
            // EINVAL/ESRCH: the thread is not joinable, which this type rules out.
            precondition(rc == 0, "pthread_join failed with error \(rc)")
            done = true
        }
    }
}
