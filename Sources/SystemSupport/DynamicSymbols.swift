#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// C library functions Swift's Glibc module does not export, looked up by name at run time
/// (`dlsym` on the default handle); each is nil on a C library without it (macOS, old glibc).
enum DynamicSymbols {
    /// `copy_file_range(2)`: in fd, in offset, out fd, out offset, count, flags.
    typealias CopyFileRange = @convention(c) (Int32, UnsafeMutablePointer<Int64>?, Int32, UnsafeMutablePointer<Int64>?, Int, UInt32) -> Int
    /// `sync_file_range(2)`: fd, offset, count, flags.
    typealias SyncFileRange = @convention(c) (Int32, Int64, Int64, UInt32) -> Int32
    /// `getdents64(2)`: fd, buffer, buffer size.
    typealias ListFolder = @convention(c) (Int32, UnsafeMutableRawPointer, Int) -> Int
    /// `mallopt(3)`: parameter, value.
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    /// `renameat2(2)`: old folder fd, old path, new folder fd, new path, flags.
    typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32

    static let copyFileRange: CopyFileRange? = lookUp("copy_file_range")
    static let syncFileRange: SyncFileRange? = lookUp("sync_file_range")
    /// SYNC_FILE_RANGE_WRITE: start writeback, do not wait.
    static let syncFileRangeWrite: UInt32 = 2
    /// Async-signal-safe folder listing for the SIGBUS handler (opendir would allocate).
    static let listFolder: ListFolder? = lookUp("getdents64")
    static let mallopt: Mallopt? = lookUp("mallopt")
    static let renameAt2: RenameAt2? = lookUp("renameat2")
    /// RENAME_EXCHANGE: swap the two paths atomically.
    static let renameExchange: UInt32 = 2

    /// The function called `name`, cast to `F`. The caller's `F` must be the function's true C
    /// signature: the cast is unchecked.
    private static func lookUp<F>(_ name: String) -> F? {
        // RTLD_DEFAULT is the null handle on glibc; on Darwin it is (void *)-2.
        #if canImport(Glibc)
        let handle = UnsafeMutableRawPointer(bitPattern: 0)
        #else
        let handle = UnsafeMutableRawPointer(bitPattern: -2)
        #endif
        guard let symbol = dlsym(handle, name) else { return nil }
        return unsafeBitCast(symbol, to: F.self)
    }
}
