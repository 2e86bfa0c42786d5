@testable import Checkpoints
import SafeTensors
import Testing

@Suite struct ErrorTests {
    func error(_ entries: [TensorShapeEntry]) -> CheckpointError? {
        do {
            _ = try Architecture.detect(entries)
            return nil
        } catch let e as CheckpointError {
            return e
        } catch {
            return nil
        }
    }

    @Test func unknownKeysAreNamed() {
        var specs = Tiny.sd3.expectedTensors(layout: .original)
        specs.append(TensorShapeEntry(name: "model.diffusion_model.joint_blocks.0.x_block.lora.weight", shape: [4]))
        specs.append(TensorShapeEntry(name: "first_stage_model.decoder.conv_in.weight", shape: [4]))
        let e = error(specs)
        guard case let .unknownArchitecture(family, layout, unexpected, count, missing, _) = e else {
            Issue.record("expected unknownArchitecture, got \(String(describing: e))"); return
        }
        #expect(family == .sd3 && layout == .original && count == 2 && missing.isEmpty)
        #expect(unexpected == ["model.diffusion_model.joint_blocks.0.x_block.lora.weight",
                               "first_stage_model.decoder.conv_in.weight"])
        let text = e!.description
        #expect(text.contains("\"model.diffusion_model.joint_blocks.0.x_block.lora.weight\""))
        #expect(text.contains("\"first_stage_model.decoder.conv_in.weight\""))
        #expect(text.contains("2 unmapped keys"))
    }

    @Test func manyUnknownKeysAreCapped() {
        var specs = Tiny.flux.expectedTensors(layout: .diffusers)
        specs += (0..<8).map { TensorShapeEntry(name: "extra.\($0)", shape: [1]) }
        let text = error(specs)?.description ?? ""
        #expect(text.contains("\"extra.4\" and 3 more"))
        #expect(!text.contains("extra.5"))
    }

    @Test func nothingRecognised() {
        let e = error([TensorShapeEntry(name: "encoder.layer.0.weight", shape: [2, 2])])
        #expect(e?.description == "The tensors are not an SD3 or FLUX transformer in either layout; "
                + "1 unmapped key: \"encoder.layer.0.weight\".")
        #expect(error([]) == .noTensors)
    }

    @Test func missingTensorIsNamed() {
        let specs = Architecture(.sd35Medium).expectedTensors(layout: .original)
            .filter { $0.name != "model.diffusion_model.joint_blocks.7.x_block.mlp.fc2.bias" }
        let e = error(specs)
        #expect(e == .unknownArchitecture(family: .sd3, layout: .original, unexpected: [], unexpectedCount: 0,
                                          missing: ["model.diffusion_model.joint_blocks.7.x_block.mlp.fc2.bias"],
                                          missingCount: 1))
        #expect(e?.description == "The tensors do not form a known SD3 transformer (original layout); "
                + "1 missing key: \"model.diffusion_model.joint_blocks.7.x_block.mlp.fc2.bias\".")

        let flux = Tiny.flux.expectedTensors(layout: .diffusers).filter { $0.name != "single_transformer_blocks.1.proj_mlp.weight" }
        #expect(error(flux)?.description.contains("\"single_transformer_blocks.1.proj_mlp.weight\"") == true)

        let noAnchor = Tiny.flux.expectedTensors(layout: .original).filter { $0.name != "img_in.weight" }
        #expect(error(noAnchor)?.description.contains("1 missing key: \"img_in.weight\"") == true)
    }

    @Test func contradictingShape() {
        var specs = Tiny.flux.expectedTensors(layout: .original)
        let i = specs.firstIndex { $0.name == "double_blocks.1.img_mlp.0.weight" }!
        specs[i].shape = [96, 32]
        let e = error(specs)
        #expect(e == .shapeMismatch(tensor: "double_blocks.1.img_mlp.0.weight", expected: [128, 32], actual: [96, 32],
                                    architecture: "FLUX-style"))
        #expect(e?.description == "Tensor \"double_blocks.1.img_mlp.0.weight\" has shape [96, 32] but FLUX-style expects [128, 32].")

        var sd3 = Architecture(.sd35Large).expectedTensors(layout: .diffusers)
        let j = sd3.firstIndex { $0.name == "transformer_blocks.5.attn.norm_k.weight" }!
        sd3[j].shape = [32]
        #expect(error(sd3) == .shapeMismatch(tensor: "transformer_blocks.5.attn.norm_k.weight", expected: [64], actual: [32],
                                             architecture: "SD3.5 Large"))
    }

    @Test func underivableShapes() {
        var specs = Tiny.sd3.expectedTensors(layout: .original, prefix: KeyPrefix.none)
        let i = specs.firstIndex { $0.name == "pos_embed" }!
        specs[i].shape = [1, 50, 32]
        guard case .underivableConfig(let tensor, _) = error(specs) else { Issue.record("expected underivableConfig"); return }
        #expect(tensor == "pos_embed")
    }

    @Test func mixedLayouts() {
        let original = Tiny.sd3.expectedTensors(layout: .original, prefix: KeyPrefix.none)
        let diffusers = Tiny.sd3.expectedTensors(layout: .diffusers)
        let mixed = Array(original.prefix(40)) + Array(diffusers.suffix(from: 60))
        guard case let .mixedLayouts(o, d) = error(mixed) else { Issue.record("expected mixedLayouts"); return }
        #expect(o.count == 5 && d.count == 5)
        #expect(o.allSatisfy { original.map(\.name).contains($0) })
        #expect(d.allSatisfy { diffusers.map(\.name).contains($0) })
        #expect(error(mixed)!.description.hasPrefix("The checkpoint mixes the original layout (\""))
    }

    @Test func hugeBlockIndexIsRejectedCheaply() {
        let specs = Tiny.flux.expectedTensors(layout: .original)
            + [TensorShapeEntry(name: "single_blocks.999999999.linear2.bias", shape: [32])]
        #expect(error(specs) == .unknownArchitecture(family: .flux, layout: .original,
                                                     unexpected: ["single_blocks.999999999.linear2.bias"], unexpectedCount: 1,
                                                     missing: [], missingCount: 0))
    }

    @Test func duplicateKey() {
        let specs = Tiny.flux.expectedTensors(layout: .original)
        #expect(error(specs + [specs[3]]) == .duplicateTensor(specs[3].name))
    }

    @Test func controlCharactersAreEscaped() {
        let e = CheckpointError.shapeMismatch(tensor: "a\u{1B}[2Jb\n", expected: [1], actual: [2], architecture: "X")
        #expect(e.description == "Tensor \"a\\u{1B}[2Jb\\n\" has shape [2] but X expects [1].")
    }
}
