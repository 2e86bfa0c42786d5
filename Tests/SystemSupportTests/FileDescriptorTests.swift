import Foundation
import Testing
import SystemSupport
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Descriptor I/O finishes short transfers, and a failed call becomes a `SystemError` naming the
/// path, the operation and the C library's message.
@Suite struct FileDescriptorTests {
    let dir = TemporaryDirectory()

    /// A pipe: (read end, write end).
    func makePipe() throws -> (FileDescriptor, FileDescriptor) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw PeerUnavailable(reason: "pipe failed") }
        return (FileDescriptor(rawValue: fds[0], path: "<pipe read end>"), FileDescriptor(rawValue: fds[1], path: "<pipe write end>"))
    }

    /// 1 MiB of a recognisable pattern.
    let payload: [UInt8] = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) }

    @Test func readFinishesShortReadsFromAPipe() throws {
        // A pipe holds 64 KiB: each read(2) returns at most what the writer has put in so far,
        // so filling the 1 MiB buffer takes many calls.
        let (reader, writer) = try makePipe()
        defer { reader.close() }
        let bytes = payload
        let thread = Thread {
            // Small writes, so the reader sees many short reads.
            var offset = 0
            while offset < bytes.count {
                let n = min(5000, bytes.count - offset)
                try? bytes[offset..<(offset + n)].withUnsafeBytes { try writer.write($0) }
                offset += n
            }
            writer.close()
        }
        thread.start()
        var received = [UInt8](repeating: 0, count: payload.count + 10)
        let n = try received.withUnsafeMutableBytes { try reader.read(into: $0) }
        #expect(n == payload.count, "read stops only at end of file")
        #expect(Array(received[0..<n]) == payload)
    }

    /// Starts a thread reading `count` bytes from `source` in steps of at most `step` bytes
    /// (so the writer's calls block and resume, or come back short, many times), then closing
    /// it; `result()` waits for the thread and returns what it read.
    func drain(_ source: FileDescriptor, count: Int, step: Int) -> () -> [UInt8] {
        let collected = UncheckedSendable(UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1))
        let done = DispatchSemaphore(value: 0)
        Thread {
            var total = 0
            while total < count {
                let slice = UnsafeMutableRawBufferPointer(rebasing: collected.value[total..<min(total + step, count)])
                guard let n = try? source.readSome(into: slice), n > 0 else { break }
                total += n
            }
            source.close()
            done.signal()
        }.start()
        return {
            done.wait()
            defer { collected.value.deallocate() }
            return Array(collected.value)
        }
    }

    @Test func writeFinishesAWriteLargerThanThePipe() throws {
        let (reader, writer) = try makePipe()
        let result = drain(reader, count: payload.count, step: 777)
        try writer.write(payload)
        writer.close()
        #expect(result() == payload)
    }

    @Test func sendFinishesShortWritesOnANonBlockingSocket() throws {
        // A non-blocking socket takes only what fits in its buffer: send(2) returns short counts
        // and EAGAIN, and `send(_:deadline:operation:)` must poll and go on until all is sent.
        let (ours, theirs) = try FileDescriptor.makeSocketPair(label: "<test socket>")
        defer { ours.close() }
        ours.setNonBlocking()
        let big = payload + payload + payload + payload
        let result = drain(theirs, count: big.count, step: 100_000)
        big.withUnsafeBytes { raw in
            do throws(StreamFailure) { try ours.send(raw, deadline: monotonicSeconds() + 30, operation: "sending") } catch {
                Issue.record("send failed: \(error)")
            }
        }
        #expect(result() == big)
    }

    @Test func sendToAClosedPeerIsPeerClosedNotSIGPIPE() throws {
        let (ours, theirs) = try FileDescriptor.makeSocketPair(label: "<test socket>")
        defer { ours.close() }
        theirs.close()
        let bytes = [UInt8](repeating: 1, count: 1 << 16)
        var failure: StreamFailure?
        bytes.withUnsafeBytes { raw in
            do throws(StreamFailure) { try ours.send(raw, deadline: monotonicSeconds() + 5, operation: "sending") } catch { failure = error }
        }
        #expect(failure == .peerClosed)
    }

    @Test func receiveTimesOutAtTheDeadline() throws {
        let (ours, theirs) = try FileDescriptor.makeSocketPair(label: "<test socket>")
        defer { ours.close(); theirs.close() }
        var buffer = [UInt8](repeating: 0, count: 16)
        let start = monotonicSeconds()
        var failure: StreamFailure?
        buffer.withUnsafeMutableBytes { raw in
            do throws(StreamFailure) { _ = try ours.receive(into: raw, deadline: start + 0.1, operation: "reading") } catch { failure = error }
        }
        #expect(failure == .timeout)
        #expect(monotonicSeconds() - start >= 0.1)
    }

    @Test func positionalReadAndWrite() throws {
        let path = dir.file("positional")
        let file = try FileDescriptor.openForWriting(path, exclusive: true)
        try file.write([UInt8](repeating: 0, count: 100))
        try [UInt8]([1, 2, 3]).withUnsafeBytes { try file.write($0, at: 50) }
        try file.sync()
        #expect(try file.status().size == 100)
        try file.truncate(to: 60)
        try file.closeReportingErrors()
        let reader = try FileDescriptor.openForReading(path)
        defer { reader.close() }
        var bytes = [UInt8](repeating: 9, count: 20)
        let n = try bytes.withUnsafeMutableBytes { try reader.read(into: $0, at: 49) }
        #expect(n == 11, "the read stops at the end of the 60-byte file")
        #expect(Array(bytes[0..<5]) == [0, 1, 2, 3, 0])
    }

    // MARK: errno → SystemError

    @Test func openFailureNamesThePathOperationAndMessage() {
        let path = dir.file("missing/file.bin")
        #expect(throws: SystemError(path: path, operation: "open", code: ENOENT)) { try FileDescriptor.openForReading(path) }
        do {
            _ = try FileDescriptor.openForReading(path)
        } catch {
            #expect(error.code == ENOENT)
            #expect(error.message == "No such file or directory")
            #expect(error.description == "\(path): open failed: No such file or directory")
        }
    }

    @Test func exclusiveCreationOfAnExistingFileIsAlreadyExists() throws {
        let path = dir.file("exists")
        try writeBytes([1], to: path)
        do {
            _ = try FileDescriptor.openForWriting(path, exclusive: true)
            Issue.record("an existing file was opened exclusively")
        } catch {
            #expect(error.alreadyExists)
            #expect(error.path == path && error.operation == "open for writing")
        }
    }

    @Test func readFileRefusesFoldersAndFilesAboveTheLimit() throws {
        let path = dir.file("data")
        try writeBytes(Array(repeating: 7, count: 100), to: path)
        #expect(try FileSystem.readFile(path, limit: 100) == Array(repeating: 7, count: 100))
        do {
            _ = try FileSystem.readFile(path, limit: 99)
            Issue.record("the limit was not applied")
        } catch {
            #expect(error.exceedsLimit)
            #expect(error.description == "\(path): read failed: file larger than 99 bytes")
        }
        #expect(throws: SystemError(path: dir.path, operation: "read", message: "not a regular file")) {
            try FileSystem.readFile(dir.path, limit: 1000)
        }
    }

    @Test func listFolderFailureNamesTheFolder() {
        let path = dir.file("nothing-here")
        #expect(throws: SystemError(path: path, operation: "list folder", code: ENOENT)) { try FileSystem.listFolder(path) }
    }
}
