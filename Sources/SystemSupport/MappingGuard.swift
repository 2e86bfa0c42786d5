import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns the SIGBUS that a mapped file raises when another process truncates it under us into a
/// clean failure: one sentence naming the file on standard error, every temporary output removed,
/// exit status 1.
///
/// Reading a page of a `MAP_SHARED` mapping that now lies past the end of its file raises SIGBUS
/// in whichever thread touched it, in the middle of ordinary code (a checksum loop, a memcpy), with
/// nothing to catch. The handler therefore needs to know, from the faulting address alone, which
/// file was being read and which temporary files to remove — and it may use only
/// async-signal-safe calls (`write`, `unlink`, `rmdir`, `_exit`), no locks and no allocation.
///
/// **Why this is global state** (the one exception to "no global mutable state"): a signal handler
/// receives no context pointer, and signal dispositions are per process. So the facts it reads
/// live in two fixed-size, process-wide tables allocated once, whose slots are claimed and
/// released with atomics (lock-free; a full table just means an unprotected mapping, which then
/// crashes as before):
/// - mapped regions (address range → file path), registered by `SafeTensorsFile` and
///   `DeltaArchiveReader` (through `MappedRegion`) right after `mmap` and removed before `munmap`;
/// - cleanup paths: `AtomicFile` temporary files while they are being written, and staging
///   folders (emptied, then removed) while an output folder is being assembled.
///
/// The tables are only read by the handler, which the `flowguard` executable installs with
/// `installSignalHandler()`; as a library, registering costs two atomic operations and a copy
/// of the path. A fault outside every registered region is not ours: the handler removes the
/// temporary files, restores the default action and returns, so the process dies of SIGBUS as
/// it would have without it.
///
/// Test hook (tests only, documented in `docs/safetensors.md`): when the environment variable
/// `FLOWGUARD_TEST_PAUSE_AFTER_MAP` is `N:FIFO`, the N-th registered mapping (counting from 1)
/// waits, right after it is registered, until a byte is written to (or the writer closes) the
/// named pipe FIFO. A test uses that pause to truncate the file at a known moment.
package enum MappingGuard {
    /// Installs the SIGBUS handler, and SIGINT/SIGTERM/SIGHUP handlers that remove the temporary
    /// outputs before dying of the signal, for the whole process. Call once, early, from `main`.
    package static func installSignalHandler() {
        // Touch the tables here, in normal context: the handler must never run their lazy
        // initialisation (which allocates).
        _ = mappedRegions.capacity
        _ = cleanupPaths.capacity
        _ = DynamicSymbols.listFolder
        _ = messageTail
        var action = sigaction()
        #if canImport(Glibc)
        action.__sigaction_handler = .init(sa_sigaction: handleSIGBUS)
        #else
        action.__sigaction_u = .init(__sa_sigaction: handleSIGBUS)
        #endif
        action.sa_flags = SA_SIGINFO
        sigemptyset(&action.sa_mask)
        _ = sigaction(SIGBUS, &action, nil)
        // Interrupted (Ctrl-C, kill, hang-up): remove the temporary outputs, then die of the
        // same signal so the exit status tells what happened.
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            var terminate = sigaction()
            #if canImport(Glibc)
            terminate.__sigaction_handler = .init(sa_handler: handleTermination)
            #else
            terminate.__sigaction_u = .init(__sa_handler: handleTermination)
            #endif
            terminate.sa_flags = 0
            sigemptyset(&terminate.sa_mask)
            _ = sigaction(signal, &terminate, nil)
        }
    }

    /// Records that `length` bytes at `start` map the file `path`. Returns a token for
    /// `unregisterMapping`; -1 when the table is full (the mapping is then unprotected).
    package static func registerMapping(start: UnsafeRawPointer, length: Int, path: String) -> Int {
        let begin = UInt(bitPattern: start)
        let slot = mappedRegions.claim(begin: begin, end: begin &+ UInt(max(length, 0)), path: path, isFolder: false)
        pauseForTestsIfAsked()
        return slot
    }

    /// Forgets a mapping; call before `munmap`.
    package static func unregisterMapping(_ token: Int) { mappedRegions.release(token) }

    /// Records a temporary file (or, with `isFolder`, a staging folder whose files are removed
    /// and which is then removed itself) to delete if the process is stopped by a truncated
    /// mapping. Returns a token for `unregisterCleanup`; -1 when the table is full.
    package static func registerCleanup(path: String, isFolder: Bool = false) -> Int {
        cleanupPaths.claim(begin: 0, end: 0, path: path, isFolder: isFolder)
    }

    /// Forgets a cleanup path (it was renamed into place or removed).
    package static func unregisterCleanup(_ token: Int) { cleanupPaths.release(token) }

    /// The message printed when a mapped file shrinks under us; `file` is the path.
    package static func changedWhileReadingMessage(_ file: String) -> String {
        "error: \(file)" + messageTail.description
    }

    static let messageTail: StaticString = " changed while being read (it was truncated or replaced by another process); nothing was written\n"

    static let mappedRegions = SlotTable(capacity: 256)
    static let cleanupPaths = SlotTable(capacity: 64)
    static let mappingCount = Atomic<Int>(0)

    /// The test hook described in the type's documentation.
    private static func pauseForTestsIfAsked() {
        guard let raw = getenv("FLOWGUARD_TEST_PAUSE_AFTER_MAP") else { return }
        let spec = String(cString: raw)
        guard let colon = spec.firstIndex(of: ":"), let n = Int(spec[..<colon]) else { return }
        let count = mappingCount.add(1, ordering: .relaxed).newValue
        guard count == n else { return }
        let fd = open(String(spec[spec.index(after: colon)...]), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        var byte: UInt8 = 0
        _ = read(fd, &byte, 1)
        close(fd)
    }
}

/// A fixed number of slots, each an address range, a path (NUL-terminated, at most 4095 bytes)
/// and a kind, claimed and released lock-free. Slot states: 0 free, 1 being filled or emptied,
/// 2 live. A reader (the signal handler) looks only at live slots; a slot released and reused
/// while the handler reads it can at worst give a garbled path in the message.
final class SlotTable: @unchecked Sendable {
    // @unchecked: the buffers are written only by the thread that holds a slot in state 1, and
    // published to readers by the release store of state 2.
    let capacity: Int
    static let pathCapacity = 4096
    private let states: UnsafeMutablePointer<Atomic<Int>>
    private let begins: UnsafeMutablePointer<UInt>
    private let ends: UnsafeMutablePointer<UInt>
    private let folders: UnsafeMutablePointer<Bool>
    private let paths: UnsafeMutablePointer<CChar>

    init(capacity: Int) {
        self.capacity = capacity
        states = .allocate(capacity: capacity)
        for i in 0..<capacity { (states + i).initialize(to: Atomic(0)) }
        begins = .allocate(capacity: capacity)
        begins.initialize(repeating: 0, count: capacity)
        ends = .allocate(capacity: capacity)
        ends.initialize(repeating: 0, count: capacity)
        folders = .allocate(capacity: capacity)
        folders.initialize(repeating: false, count: capacity)
        // Only the first byte of each path is touched until a slot is used: untouched pages of
        // this 1 MiB cost no memory.
        paths = .allocate(capacity: capacity * SlotTable.pathCapacity)
        for i in 0..<capacity { paths[i * SlotTable.pathCapacity] = 0 }
    }
    // Never deallocated: the tables live as long as the process.

    /// Claims a free slot and fills it; returns its index, or -1 if every slot is taken.
    func claim(begin: UInt, end: UInt, path: String, isFolder: Bool) -> Int {
        for i in 0..<capacity where states[i].compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            begins[i] = begin
            ends[i] = end
            folders[i] = isFolder
            let destination = paths + i * SlotTable.pathCapacity
            var n = 0
            for byte in path.utf8 where n < SlotTable.pathCapacity - 1 {
                destination[n] = CChar(bitPattern: byte)
                n += 1
            }
            destination[n] = 0
            states[i].store(2, ordering: .releasing)
            return i
        }
        return -1
    }

    /// Releases a slot returned by `claim` (a negative index is ignored).
    func release(_ slot: Int) {
        guard slot >= 0 && slot < capacity else { return }
        states[slot].store(0, ordering: .releasing)
    }

    // The functions below run inside the signal handler: no allocation, no locks.

    /// The path of the live slot whose range contains `address`, if any.
    func path(containing address: UInt) -> UnsafePointer<CChar>? {
        for i in 0..<capacity where states[i].load(ordering: .acquiring) == 2 {
            if address >= begins[i] && address < ends[i] { return UnsafePointer(paths + i * SlotTable.pathCapacity) }
        }
        return nil
    }

    /// Calls `body` with each live slot's path and kind.
    func forEachLive(_ body: (UnsafePointer<CChar>, Bool) -> Void) {
        for i in 0..<capacity where states[i].load(ordering: .acquiring) == 2 {
            body(UnsafePointer(paths + i * SlotTable.pathCapacity), folders[i])
        }
    }
}

/// The SIGBUS handler. Async-signal-safe: reads the tables, then write(2), unlink(2), rmdir(2),
/// _exit(2).
private func handleSIGBUS(_ signal: Int32, _ info: UnsafeMutablePointer<siginfo_t>?, _ context: UnsafeMutableRawPointer?) {
    #if canImport(Glibc)
    let address = UInt(bitPattern: info?.pointee._sifields._sigfault.si_addr)
    #else
    let address = UInt(bitPattern: info?.pointee.si_addr)
    #endif
    removeCleanupPaths()
    guard let path = MappingGuard.mappedRegions.path(containing: address) else {
        // Not a mapping of ours: die of SIGBUS as we would have without the handler.
        restoreDefaultAction(SIGBUS)
        return
    }
    writeToStandardError("error: ")
    _ = write(2, path, strlen(path))
    writeToStandardError(MappingGuard.messageTail)
    _exit(1)
}

/// SIGINT/SIGTERM/SIGHUP: removes the registered temporary outputs, restores the default action
/// and raises the signal again (all async-signal-safe).
private func handleTermination(_ signal: Int32) {
    removeCleanupPaths()
    restoreDefaultAction(signal)
    _ = raise(signal)
}

/// Puts back the default action of `signal` (async-signal-safe).
private func restoreDefaultAction(_ signal: Int32) {
    var action = sigaction()
    sigemptyset(&action.sa_mask)
    #if canImport(Glibc)
    action.__sigaction_handler = .init(sa_handler: SIG_DFL)
    #else
    action.__sigaction_u = .init(__sa_handler: SIG_DFL)
    #endif
    _ = sigaction(signal, &action, nil)
}

private func writeToStandardError(_ text: StaticString) {
    _ = write(2, text.utf8Start, text.utf8CodeUnitCount)
}

/// Unlinks every registered temporary file, then empties and removes every staging folder.
private func removeCleanupPaths() {
    MappingGuard.cleanupPaths.forEachLive { path, isFolder in if !isFolder { _ = unlink(path) } }
    MappingGuard.cleanupPaths.forEachLive { path, isFolder in
        guard isFolder else { return }
        emptyFolder(path)
        _ = rmdir(path)
    }
}

/// Unlinks the plain files directly inside `folder` using getdents64 on a stack buffer (opendir
/// would allocate).
private func emptyFolder(_ folder: UnsafePointer<CChar>) {
    guard let listing = DynamicSymbols.listFolder else { return }
    let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    defer { close(fd) }
    // A fixed buffer on the stack (1 KiB: small enough that Swift never moves it to the heap); each getdents64 record: u64 ino, i64 off, u16 reclen,
    // u8 type, then the NUL-terminated name.
    withUnsafeTemporaryAllocation(byteCount: 1024, alignment: 8) { buffer in
        guard let base = buffer.baseAddress else { return }
        while true {
            let n = listing(fd, base, buffer.count)
            if n <= 0 { return }
            var offset = 0
            while offset < n {
                let record = base + offset
                let length = Int(record.loadUnaligned(fromByteOffset: 16, as: UInt16.self))
                guard length > 0 else { return }
                let name = (record + 19).assumingMemoryBound(to: CChar.self)
                let isDot = name[0] == 0x2E && (name[1] == 0 || (name[1] == 0x2E && name[2] == 0))
                if !isDot { _ = unlinkat(fd, name, 0) }
                offset += length
            }
        }
    }
}
