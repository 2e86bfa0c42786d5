import Foundation
import Testing
import LoRA
import SafeTensors
import TestSupport

/// Inputs the libFuzzer targets (tools/fuzz) made crash, kept in tools/fuzz/regressions/: each
/// must now give an error (or a result) instead of a trap.
@Suite struct FuzzRegressionTests {
    func path(_ name: String) -> String { Repository.path("tools/fuzz/regressions/" + name) }

    /// A factor of shape [2^62, 2, 0]: reading it trapped in `Matrix` (Int overflow of the shape
    /// product). The header is now refused.
    @Test func zeroSizedFactorWithHugeDimensionsIsRefused() throws {
        let file = path("lora-zero-size-huge-shape.safetensors")
        let error = #expect(throws: SafeTensorsError.self) { try LoRAReader.load(path: file) }
        guard case let .invalidHeader(_, tensor, reason, _) = error else { Issue.record("wrong error: \(String(describing: error))"); return }
        #expect(tensor == "transformer.transformer_blocks.0.attn.to_q.lora_A.weight")
        #expect(reason.contains("non-zero dimensions"))
    }

    /// kohya keys `lora_unet_joint_blocks_<Int.max>_…`: sizing the generic architecture from the
    /// block index overflowed (and large indices built huge module lists). Such keys are now
    /// unresolved: an unknown-dialect error naming them.
    @Test func kohyaBlockIndexBeyondAnyModelIsUnresolved() throws {
        let file = path("lora-kohya-block-index-overflow.safetensors")
        let error = #expect(throws: LoRAError.self) { try LoRAReader.load(path: file) }
        guard case let .unknownDialect(_, format, keys, count) = error else { Issue.record("wrong error: \(String(describing: error))"); return }
        #expect(format == .kohya && count == 2)
        #expect(keys.allSatisfy { $0.contains("9223372036854775807") })
    }

    /// A diffusers adapter with block index Int.max reads, but inferring its architecture
    /// (`lora convert` without --base) overflowed "highest index + 1"; now it is an error.
    @Test func inferredArchitectureRefusesHugeBlockIndex() throws {
        let adapter = try LoRAReader.read(path: path("lora-inferred-block-index-overflow.safetensors"))
        #expect(adapter.modules.count == 2)
        let error = #expect(throws: LoRAError.self) { try adapter.inferredArchitecture() }
        guard case let .unknownArchitecture(reason) = error else { Issue.record("wrong error: \(String(describing: error))"); return }
        #expect(reason.contains("block index 9223372036854775807"))
    }
}
