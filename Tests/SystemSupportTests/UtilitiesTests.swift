import Foundation
import Testing
import SystemSupport
import TestSupport

/// The small shared helpers: "is this a folder", display escaping, parallel loops, the clock,
/// the lock, C formatting and mapped regions.
@Suite struct UtilitiesTests {
    let dir = TemporaryDirectory()

    @Test func isFolderTellsFoldersFromFilesAndMissingPaths() throws {
        let file = dir.file("f")
        try writeBytes([1], to: file)
        try FileManager.default.createSymbolicLink(atPath: dir.file("link"), withDestinationPath: dir.path)
        #expect(FileSystem.isFolder(dir.path))
        #expect(FileSystem.isFolder(dir.path + "/"))
        #expect(FileSystem.isFolder(dir.file("link")), "links are followed")
        #expect(!FileSystem.isFolder(file))
        #expect(!FileSystem.isFolder(dir.file("missing")))
        #expect(FileSystem.isRegularFile(file) && !FileSystem.isRegularFile(dir.path))
        #expect(FileSystem.status(of: dir.file("link"), followingLinks: false)?.kind == .link)
        #expect(FileSystem.identity(of: dir.file("link")) == FileSystem.identity(of: dir.path))
    }

    @Test func removeTreeDoesNotFollowLinks() throws {
        let outside = TemporaryDirectory()
        try writeBytes([1], to: outside.file("precious"))
        let tree = dir.file("tree")
        try FileManager.default.createDirectory(atPath: tree + "/a/b", withIntermediateDirectories: true)
        try writeBytes([1], to: tree + "/a/b/c")
        try FileManager.default.createSymbolicLink(atPath: tree + "/a/out", withDestinationPath: outside.path)
        #expect(FileSystem.removeTree(tree))
        #expect(!FileSystem.exists(tree))
        #expect(outside.listing() == ["precious"])
    }

    @Test func pathComponents() {
        #expect(FileSystem.parentFolder(of: "a/b/c") == "a/b")
        #expect(FileSystem.parentFolder(of: "c") == ".")
        #expect(FileSystem.parentFolder(of: "/c") == "/")
        #expect(FileSystem.lastComponent(of: "a/b/c/") == "c")
        #expect(FileSystem.trimmingTrailingSlashes("a/b//") == "a/b")
        #expect(FileSystem.trimmingTrailingSlashes("/") == "/")
    }

    @Test func escapingCoversC0C1SeparatorsAndBidiControls() {
        #expect(escapeForDisplay("plain name.weight ünï 名") == "plain name.weight ünï 名")
        #expect(escapeForDisplay("a\nb\rc\td\\e") == "a\\nb\\rc\\td\\\\e")
        #expect(escapeForDisplay("\u{1B}[31mred\u{07}\u{00}\u{7F}") == "\\u{1B}[31mred\\u{7}\\u{0}\\u{7F}")
        #expect(escapeForDisplay("x\u{85}y\u{9B}z\u{80}\u{9F}") == "x\\u{85}y\\u{9B}z\\u{80}\\u{9F}", "C1 controls")
        #expect(escapeForDisplay("p\u{2028}q\u{2029}") == "p\\u{2028}q\\u{2029}", "line and paragraph separators")
        #expect(escapeForDisplay("\u{202E}txt.exe\u{202C}\u{200E}\u{200F}\u{2066}\u{2069}")
                == "\\u{202E}txt.exe\\u{202C}\\u{200E}\\u{200F}\\u{2066}\\u{2069}", "bidirectional controls")
        #expect(escapeForDisplay("\u{A0}\u{2030}") == "\u{A0}\u{2030}", "neighbours of the escaped ranges are kept")
    }

    /// How often each index of `0..<count` was visited by `run`.
    func visits(_ count: Int, _ run: (_ visit: @escaping @Sendable (Int) -> Void) -> Void) -> [Int] {
        let lock = Lock()
        let counts = UncheckedSendable(UnsafeMutableBufferPointer<Int>.allocate(capacity: max(count, 1)))
        defer { counts.value.deallocate() }
        counts.value.initialize(repeating: 0)
        run { i in lock.withLock { counts.value[i] += 1 } }
        return Array(counts.value.prefix(count))
    }

    @Test(arguments: [0, 1, 2, 7, 1000], [1, 3, 8])
    func parallelLoopsVisitEveryIndexOnce(count: Int, threads: Int) {
        let once = [Int](repeating: 1, count: count)
        #expect(visits(count) { visit in parallelFor(count, threads: threads) { visit($0) } } == once)
        #expect(visits(count) { visit in parallelForDynamic(count, threads: threads) { _, i in visit(i) } } == once)
        #expect(visits(count) { visit in
            parallelForStatic(count, threads: threads) { worker, i in
                precondition(worker < threads && i % min(threads, max(count, 1)) == worker)
                visit(i)
            }
        } == once)
        for grain in [1, 5, 400] {
            #expect(visits(count) { visit in parallelForChunks(count, threads: threads, grain: grain) { $0.forEach(visit) } } == once)
        }
    }

    @Test func workersHaveDistinctIdentitiesWithinTheirRange() {
        let lock = Lock()
        var seen = Set<Int>()
        parallelForDynamic(64, threads: 4) { worker, _ in
            precondition(worker >= 0 && worker < 4)
            lock.withLock { _ = seen.insert(worker) }
        }
        #expect(!seen.isEmpty && seen.allSatisfy { (0..<4).contains($0) })
    }

    @Test func monotonicClockAdvancesAndSleepWaits() {
        let a = monotonicSeconds()
        ProcessControl.sleep(seconds: 0.02)
        let b = monotonicSeconds()
        #expect(b - a >= 0.02 && b - a < 5)
    }

    @Test func formatCUsesPrintfConversions() {
        #expect(formatC(0.012345678, "%.4g") == "0.01235")
        #expect(formatC(-1.5e-7, "%.4g") == "-1.5e-07")
        #expect(formatC(.infinity, "%.4g") == "inf")
        #expect(binaryLogarithm(1024) == 10)
    }

    @Test func mappedRegionShowsTheFileAndIsRegistered() throws {
        let path = dir.file("mapped")
        let bytes: [UInt8] = (0..<10_000).map { UInt8(truncatingIfNeeded: $0) }
        try writeBytes(bytes, to: path)
        let file = try FileDescriptor.openForReading(path)
        let region = try MappedRegion(mapping: file, count: bytes.count)
        file.close()
        #expect(Array(region.bytes) == bytes, "the mapping stays valid after the descriptor is closed")
        region.advise(.sequential, range: 100..<5000)
        region.advise(.dontNeed, range: 0..<bytes.count)
        #expect(Array(region.bytes[4096..<4100]) == Array(bytes[4096..<4100]), "advice never changes the contents")
        #expect(MappingGuard.changedWhileReadingMessage(path).hasPrefix("error: \(path) changed while being read"))
    }

    @Test func processExistence() {
        #expect(ProcessControl.exists(ProcessControl.currentID))
        #expect(ProcessControl.currentID == ProcessInfo.processInfo.processIdentifier)
    }
}
