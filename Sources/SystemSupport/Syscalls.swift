#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The C library's calls whose names the types of this module reuse as method names
// (`FileDescriptor.read`, `.write`, `.close`): called through these file-scope functions, where
// the names still mean the C functions, on Linux and on macOS alike.

/// `open(2)`.
func systemOpen(_ path: String, _ flags: Int32, _ permissions: mode_t) -> Int32 { open(path, flags, permissions) }
/// `close(2)`.
func systemClose(_ fd: Int32) -> Int32 { close(fd) }
/// `read(2)`.
func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int { read(fd, buffer, count) }
/// `write(2)`.
func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int { write(fd, buffer, count) }
/// `exit(3)`.
func systemExit(_ status: Int32) -> Never { exit(status) }
/// `kill(2)`.
func systemKill(_ pid: Int32, _ signal: Int32) -> Int32 { kill(pid, signal) }
/// `shutdown(2)`.
func systemShutdown(_ fd: Int32, _ how: Int32) -> Int32 { shutdown(fd, how) }
/// `rename(2)`.
func systemRename(_ from: String, _ to: String) -> Int32 { rename(from, to) }
