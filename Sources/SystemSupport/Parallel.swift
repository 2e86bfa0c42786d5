import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Loops over an index range on several threads (Dispatch's `concurrentPerform`). In each, the
// body runs once for every index; bodies of different indices may run at the same time, so they
// must touch disjoint memory (or synchronise) — the invariant every caller keeps. The body is
// carried to the worker threads in an `UncheckedSendable` box for that reason.

/// Runs `body(i)` for every i in `0..<count` on up to `threads` threads; worker w takes the
/// indices w, w + workers, … (a static split: fine when items cost about the same).
package func parallelFor(_ count: Int, threads: Int, _ body: (Int) -> Void) {
    parallelForStatic(count, threads: threads) { _, i in body(i) }
}

/// Runs `body(worker, i)` for every i in `0..<count` on up to `threads` workers, worker w taking
/// the indices w, w + workers, …; `worker` is in `0..<threads`, so per-worker scratch can be
/// indexed by it.
package func parallelForStatic(_ count: Int, threads: Int, _ body: (_ worker: Int, _ index: Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for i in 0..<count { body(0, i) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let box = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            var i = w
            while i < count {
                box.value(w, i)
                i += workers
            }
        }
    }
}

/// Runs `body(worker, i)` for every i in `0..<count` on up to `threads` workers that take the next
/// index as they become free (work items of uneven size stay balanced). `worker` is in
/// `0..<threads`: per-worker scratch state can be indexed by it.
package func parallelForDynamic(_ count: Int, threads: Int, _ body: (_ worker: Int, _ index: Int) -> Void) {
    let workers = max(1, min(threads, count))
    if workers == 1 {
        for i in 0..<count { body(0, i) }
        return
    }
    let counter = WorkCounter()
    withoutActuallyEscaping(body) { body in
        let box = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            while true {
                let i = counter.next()
                if i >= count { break }
                box.value(w, i)
            }
        }
    }
}

/// Runs `body` over `0..<count` cut into at most `threads` contiguous chunks, concurrently.
/// Chunks hold at least `grain` items, so small work stays on the calling thread.
package func parallelForChunks(_ count: Int, threads: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let chunks = max(1, min(threads, count / max(1, grain)))
    if chunks == 1 { body(0..<count); return }
    withoutActuallyEscaping(body) { body in
        let box = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            box.value(count * chunk / chunks ..< count * (chunk + 1) / chunks)
        }
    }
}

/// A shared "next index" handed out under a lock.
final class WorkCounter: @unchecked Sendable {
    // @unchecked: `value` is only touched while holding `lock`.
    private let lock = Lock()
    private var value = 0

    /// The next index (0, 1, 2, …), one per call across threads.
    func next() -> Int {
        lock.withLock {
            value += 1
            return value - 1
        }
    }
}

/// Carries a value that is not `Sendable` to other threads; whoever makes one guarantees the
/// value is used safely there (read-only, or disjoint parts per thread).
package struct UncheckedSendable<T>: @unchecked Sendable {
    /// The value.
    package let value: T
    /// Wraps `value`.
    package init(_ value: T) { self.value = value }
}

/// A mutual-exclusion lock (a pthread mutex), for the few places that share mutable state
/// between threads.
package final class Lock: @unchecked Sendable {
    // @unchecked: the mutex is the synchronisation; its memory is never moved (heap-allocated
    // once, as pthread mutexes must not be copied).
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    /// A new, unlocked lock.
    package init() {
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Takes the lock, waiting for it. Pair with `unlock()` on the same thread.
    package func lock() { pthread_mutex_lock(mutex) }

    /// Releases the lock taken by `lock()`.
    package func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` holding the lock.
    package func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock()
        defer { unlock() }
        return try body()
    }
}
