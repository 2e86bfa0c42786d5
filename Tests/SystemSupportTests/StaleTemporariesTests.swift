import Foundation
import Testing
import SystemSupport
import TestSupport

/// Temporaries left by killed writers are removed by the next writer of the same destination;
/// those of running processes are kept.
@Suite struct StaleTemporariesTests {
    let dir = TemporaryDirectory()

    /// The id of a process that has exited (and been reaped).
    func deadProcessID() throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/true")
        try process.run()
        process.waitUntilExit()
        return process.processIdentifier
    }

    @Test func nextWriterRemovesDeadWritersTemporaries() throws {
        let dead = try deadProcessID()
        let stale = dir.file(".out.safetensors.tmp-\(dead)-42")
        let live = dir.file(".out.safetensors.tmp-\(getpid())-43")
        let other = dir.file(".other.safetensors.tmp-\(dead)-44")
        let staging = dir.file(".out.safetensors.tmp-\(dead)-45")
        for path in [stale, live, other] { try writeBytes([1, 2, 3], to: path) }
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
        try writeBytes([4], to: staging + "/model.safetensors")

        let file = try AtomicFile(destination: dir.file("out.safetensors"))
        try [UInt8](repeating: 7, count: 8).withUnsafeBytes { try file.write($0) }
        try file.commit()

        let names = Set(dir.listing())
        #expect(names.contains("out.safetensors"))
        #expect(!names.contains((stale as NSString).lastPathComponent), "a dead writer's temporary is removed")
        #expect(!names.contains((staging as NSString).lastPathComponent), "a dead writer's staging folder is removed")
        #expect(names.contains((live as NSString).lastPathComponent), "a running process's temporary is kept")
        #expect(names.contains((other as NSString).lastPathComponent), "another destination's temporaries are not touched")
    }

    @Test func nextFolderWriterRemovesDeadWritersStagingFolders() throws {
        // Left by a killed writer: a staging folder and a replaced folder moved aside, both
        // holding a subfolder; and the staging folder of a writer still running.
        let dead = try deadProcessID()
        let running = ".model.tmp-\(getpid())-3"
        for name in [".model.tmp-\(dead)-1", ".model.old-\(dead)-2", running] {
            try FileManager.default.createDirectory(atPath: dir.file(name + "/peft"), withIntermediateDirectories: true)
            try writeBytes([1], to: dir.file(name + "/peft/adapter.bin"))
        }
        let folder = try AtomicFolder(destination: dir.file("model"), placement: .replace())
        try writeBytes([2], to: folder.stagingPath + "/a")
        try folder.commit()
        #expect(dir.listing() == [running, "model"], "dead writers' folders are removed, a running one's kept")
    }

    @Test func removeReportsHowManyWereRemoved() throws {
        let dead = try deadProcessID()
        for i in 0..<3 { try writeBytes([1], to: dir.file(".x.tmp-\(dead)-\(i)")) }
        try writeBytes([1], to: dir.file(".x.tmp-notapid-1"))
        #expect(StaleTemporaries.remove(in: dir.path, prefix: ".x.tmp-") == 3)
        #expect(dir.listing() == [".x.tmp-notapid-1"], "names without a process id are not touched")
    }
}
