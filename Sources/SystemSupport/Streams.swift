#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why talking over a stream (a socket to a child process) stopped.
package enum StreamFailure: Error, Sendable, Equatable {
    /// The deadline passed.
    case timeout
    /// The other end is closed (a write failed with EPIPE or ECONNRESET).
    case peerClosed
    /// A system call failed.
    case system(SystemError)
}

extension FileDescriptor {
    /// A connected pair of Unix stream sockets, close-on-exec (writes to a closed peer fail with
    /// EPIPE rather than raising SIGPIPE; `shutdown` wakes a blocked reader): the child's
    /// standard streams, one pair each. `label` names the pair in errors.
    package static func makeSocketPair(label: String) throws(SystemError) -> (ours: FileDescriptor, theirs: FileDescriptor) {
        var fds: [Int32] = [-1, -1]
        #if os(Linux)
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        #else
        let type = SOCK_STREAM
        #endif
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else { throw .last(path: label, operation: "socketpair") }
        #if !os(Linux)
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            var on: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, socklen_t(MemoryLayout<Int32>.size))
        }
        #endif
        return (FileDescriptor(rawValue: fds[0], path: label), FileDescriptor(rawValue: fds[1], path: label))
    }

    /// Makes reads and writes on the descriptor return EAGAIN instead of blocking.
    package func setNonBlocking() {
        _ = fcntl(rawValue, F_SETFL, fcntl(rawValue, F_GETFL) | O_NONBLOCK)
    }

    /// Shuts down the sending side (`writing`), or both sides, of a socket: the peer reads end of
    /// file, and a thread blocked reading this socket wakes.
    package func shutdown(onlyWriting: Bool) {
        _ = systemShutdown(rawValue, Int32(onlyWriting ? SHUT_WR : SHUT_RDWR))
    }

    /// Sends all of `bytes` on a (non-blocking) socket before `deadline` (`monotonicSeconds`),
    /// waiting for room as needed. A closed peer is `peerClosed`, never SIGPIPE.
    package func send(_ bytes: UnsafeRawBufferPointer, deadline: Double, operation: String) throws(StreamFailure) {
        guard let base = bytes.baseAddress else { return }
        var sent = 0
        while sent < bytes.count {
            let n = sendNoSignal(base + sent, bytes.count - sent)
            if n > 0 { sent += n; continue }
            let code = errno
            if code == EINTR { continue }
            if code == EAGAIN || code == EWOULDBLOCK {
                try waitUntilReady(forWriting: true, deadline: deadline, operation: operation)
                continue
            }
            if code == EPIPE || code == ECONNRESET { throw .peerClosed }
            throw .system(SystemError(path: path, operation: operation, code: code))
        }
    }

    /// `send(2)` that reports a closed peer as EPIPE instead of raising SIGPIPE.
    private func sendNoSignal(_ pointer: UnsafeRawPointer, _ count: Int) -> Int {
        #if os(Linux)
        return Glibc.send(rawValue, pointer, count, Int32(MSG_NOSIGNAL))
        #else
        return Darwin.send(rawValue, pointer, count, 0)
        #endif
    }

    /// Waits until data can be read before `deadline`, then reads once into `buffer`: the bytes
    /// read, 0 at end of stream.
    package func receive(into buffer: UnsafeMutableRawBufferPointer, deadline: Double, operation: String) throws(StreamFailure) -> Int {
        while true {
            try waitUntilReady(forWriting: false, deadline: deadline, operation: operation)
            guard let base = buffer.baseAddress else { return 0 }
            let n = systemRead(rawValue, base, buffer.count)
            if n >= 0 { return n }
            let code = errno
            if code != EINTR && code != EAGAIN { throw .system(SystemError(path: path, operation: operation, code: code)) }
        }
    }

    /// Blocks until the descriptor is ready for writing (or reading) or `deadline` passes.
    package func waitUntilReady(forWriting: Bool, deadline: Double, operation: String) throws(StreamFailure) {
        while true {
            let remaining = deadline - monotonicSeconds()
            guard remaining > 0 else { throw .timeout }
            var entry = pollfd(fd: rawValue, events: Int16(forWriting ? POLLOUT : POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(min(remaining * 1000, 60_000).rounded(.up)))
            if ready > 0 { return }
            if ready < 0 && errno != EINTR {
                throw .system(SystemError.last(path: path, operation: operation))
            }
        }
    }
}
