import Foundation
import Testing
import SystemSupport
import TestSupport

/// Atomic files and folders: the destination holds the old contents or the new ones, never a
/// mix, and no temporary is left behind whichever way the writer ends.
@Suite struct AtomicPublishTests {
    let dir = TemporaryDirectory()

    /// Every name below `path` (relative, folders with a trailing slash), sorted.
    func tree(_ path: String) -> [String] {
        var out: [String] = []
        func walk(_ folder: String, _ prefix: String) {
            for name in (try? FileSystem.listFolder(folder)) ?? [] {
                if FileSystem.isFolder(folder + "/" + name) {
                    out.append(prefix + name + "/")
                    walk(folder + "/" + name, prefix + name + "/")
                } else {
                    out.append(prefix + name)
                }
            }
        }
        walk(path, "")
        return out.sorted()
    }

    // MARK: AtomicFile

    @Test func committedFileAppearsWhole() throws {
        let destination = dir.file("out.bin")
        try writeBytes([9, 9], to: destination)
        let file = try AtomicFile(destination: destination)
        try file.write([1, 2, 3])
        #expect(try readBytes(destination) == [9, 9], "nothing is visible before commit")
        #expect(dir.listing().contains { $0.hasPrefix(".out.bin.tmp-\(ProcessControl.currentID)-") })
        try file.preallocate(1000)
        try file.write([4])
        try file.commit()
        #expect(try readBytes(destination) == [1, 2, 3, 4], "the reservation is trimmed to what was written")
        #expect(dir.listing() == ["out.bin"])
    }

    @Test func abandonedFileLeavesTheDestinationUntouched() throws {
        let destination = dir.file("out.bin")
        try writeBytes([9, 9], to: destination)
        let file = try AtomicFile(destination: destination)
        try file.write([UInt8](repeating: 1, count: 10 << 20))
        file.abandon()
        #expect(try readBytes(destination) == [9, 9])
        #expect(dir.listing() == ["out.bin"])
        do {
            let dropped = try AtomicFile(destination: dir.file("new.bin"))
            try dropped.write([1])
        }
        #expect(dir.listing() == ["out.bin"], "a writer released without commit removes its temporary")
    }

    @Test func atomicFileErrorsNameTheDestination() throws {
        let destination = dir.file("no-such-folder/out.bin")
        do {
            _ = try AtomicFile(destination: destination)
            Issue.record("created a file in a missing folder")
        } catch {
            #expect(error.description == "\(destination): create a temporary file in '\(dir.file("no-such-folder"))' failed: No such file or directory")
        }
    }

    // MARK: AtomicFolder

    @Test func replaceSwapsAWholeFolderAndLeavesNoStaleEntry() throws {
        let destination = dir.file("model")
        try FileSystem.makeFolder(destination)
        try FileSystem.makeFolder(destination + "/sub")
        try writeBytes([1], to: destination + "/old.txt")
        try writeBytes([2], to: destination + "/sub/old.txt")
        let folder = try AtomicFolder(destination: destination, placement: .replace())
        try writeBytes([3], to: folder.stagingPath + "/new.txt")
        try FileSystem.makeFolder(folder.stagingPath + "/peft")
        try writeBytes([4], to: folder.stagingPath + "/peft/weights.bin")
        #expect(tree(destination) == ["old.txt", "sub/", "sub/old.txt"], "nothing changes before commit")
        try folder.commit()
        #expect(tree(destination) == ["new.txt", "peft/", "peft/weights.bin"])
        #expect(try readBytes(destination + "/peft/weights.bin") == [4])
        #expect(dir.listing() == ["model"], "neither the staging folder nor the old folder is left")
    }

    @Test func replaceWithNamedStagingRemovesAnEarlierLeftover() throws {
        let destination = dir.file("final")
        try FileSystem.makeFolder(dir.file(".final-tmp"))
        try writeBytes([1], to: dir.file(".final-tmp/half-written"))
        let folder = try AtomicFolder(destination: destination, placement: .replace(staging: ".final-tmp", aside: ".final-old"))
        #expect(folder.stagingPath == dir.file(".final-tmp"))
        #expect(tree(folder.stagingPath).isEmpty, "the leftover of a killed run is removed first")
        try writeBytes([2], to: folder.stagingPath + "/a")
        try folder.commit()
        #expect(tree(destination) == ["a"])
        #expect(dir.listing() == ["final"])
    }

    @Test func mergeMovesFilesIntoAnExistingFolderAndKeepsTheOthers() throws {
        let destination = dir.file("out")
        try FileSystem.makeFolder(destination)
        try writeBytes([1], to: destination + "/keep.txt")
        try writeBytes([1], to: destination + "/model.bin")
        let folder = try AtomicFolder(destination: destination + "/", placement: .merge(tag: "convert"))
        #expect(FileSystem.parentFolder(of: folder.stagingPath) == destination)
        #expect(FileSystem.lastComponent(of: folder.stagingPath).hasPrefix(".convert-tmp-\(ProcessControl.currentID)-"))
        try writeBytes([2], to: folder.stagingPath + "/model.bin")
        try writeBytes([3], to: folder.stagingPath + "/index.json")
        let published = try folder.commit(order: ["model.bin", "index.json"])
        #expect(published == [destination + "/model.bin", destination + "/index.json"])
        #expect(tree(destination) == ["index.json", "keep.txt", "model.bin"])
        #expect(try readBytes(destination + "/model.bin") == [2])
    }

    @Test func mergeIntoANewFolderRenamesTheStagingFolder() throws {
        let destination = dir.file("new")
        let folder = try AtomicFolder(destination: destination, placement: .merge())
        #expect(FileSystem.parentFolder(of: folder.stagingPath) == dir.path)
        try writeBytes([5], to: folder.stagingPath + "/x")
        try folder.commit()
        #expect(tree(destination) == ["x"])
        #expect(dir.listing() == ["new"])
    }

    @Test func abandonedFolderLeavesNothingAndTheDestinationUntouched() throws {
        let destination = dir.file("model")
        try FileSystem.makeFolder(destination)
        try writeBytes([1], to: destination + "/old.txt")
        do {
            let folder = try AtomicFolder(destination: destination, placement: .replace())
            try FileSystem.makeFolder(folder.stagingPath + "/sub")
            try writeBytes([2], to: folder.stagingPath + "/sub/new.txt")
        }
        #expect(dir.listing() == ["model"])
        #expect(tree(destination) == ["old.txt"])
        do {
            let folder = try AtomicFolder(destination: destination, placement: .merge())
            try writeBytes([2], to: folder.stagingPath + "/new.txt")
            folder.abandon()
        }
        #expect(tree(destination) == ["old.txt"])
    }

    @Test func aFileInTheWayIsRefused() throws {
        let destination = dir.file("taken")
        try writeBytes([1], to: destination)
        #expect(throws: SystemError(path: destination, operation: "create the output folder", message: "a file of that name exists")) {
            try AtomicFolder(destination: destination, placement: .merge())
        }
    }
}
