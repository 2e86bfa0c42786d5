import Foundation
import Testing
import Checkpoints
import SafeTensors
import TestSupport

/// The base architecture a user names by file: a checkpoint, or a diffusers config.json.
@Suite struct ArchitectureFilesTests {
    let dir = TemporaryDirectory()

    @Test(arguments: ["sd35_tiny", "flux_tiny"])
    func checkpointAndItsConfigNameTheSameModel(model: String) throws {
        let fromWeights = try Architecture(checkpointAt: Repository.path("fixtures/\(model)/diffusers"))
        let fromConfig = try Architecture(diffusersConfigAt: Repository.path("fixtures/\(model)/diffusers/config.json"))
        #expect(fromWeights.family == fromConfig.family)
        #expect(fromWeights.name == fromConfig.name)
        #expect(try Architecture.given(base: Repository.path("fixtures/\(model)/original.safetensors"), config: nil) == fromWeights)
        #expect(try Architecture.given(base: nil, config: Repository.path("fixtures/\(model)/diffusers/config.json")) == fromConfig)
    }

    @Test func neitherGivenIsNil() throws {
        #expect(try Architecture.given(base: nil, config: nil) == nil)
    }

    @Test func configThatIsNotJSONIsNamed() throws {
        let path = dir.file("config.json")
        try "not json".write(toFile: path, atomically: true, encoding: .utf8)
        #expect {
            _ = try Architecture(diffusersConfigAt: path)
        } throws: { error in
            guard case .invalidConfig(let reason)? = error as? CheckpointError else { return false }
            return reason.hasPrefix("\(path) is not JSON")
        }
    }

    @Test func missingCheckpointIsAnOpenError() throws {
        let path = dir.file("absent.safetensors")
        #expect(throws: SafeTensorsError.self) { _ = try Architecture(checkpointAt: path) }
    }
}
