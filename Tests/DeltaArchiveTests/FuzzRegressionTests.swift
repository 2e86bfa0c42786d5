import Testing
import DeltaArchive
import TestSupport

/// Delta archives the libFuzzer target `fuzz-delta-archive` (tools/fuzz) made crash, kept in
/// tools/fuzz/regressions/: each must now give an error instead of a trap.
@Suite struct FuzzRegressionTests {
    func path(_ name: String) -> String { Repository.path("tools/fuzz/regressions/" + name) }

    /// A trailer placing the index at offset 2^64 − 1: adding its length overflowed UInt64 while
    /// opening. Now the archive is reported as having a corrupt index.
    @Test func indexOffsetNear2To64IsCorruptIndex() throws {
        let file = path("delta-index-offset-overflow.fgdelta")
        let error = #expect(throws: DeltaArchiveError.self) { try DeltaArchiveReader(path: file) }
        guard case let .corruptIndex(f, nil, reason, offset) = error else { Issue.record("wrong error: \(String(describing: error))"); return }
        #expect(f == file && offset == 16)
        #expect(reason.contains("must end at the trailer"))
    }
}
