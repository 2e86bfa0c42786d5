import Checkpoints
import Foundation
import GRPOGuard
import JSON
import SafeTensors
import TensorRuntime
import TestSupport
import Testing

/// Prompt-set files: the committed fixture, round trips, and every malformed case as a clear error.
@Suite struct PromptSetTests {
    static let fixture = Repository.path("fixtures/prompts/sd35_tiny_prompts.safetensors")

    func architecture(_ model: String) throws -> Architecture {
        let bytes = try readBytes(Repository.path("fixtures/\(model)/diffusers/config.json"))
        return try Architecture(diffusersConfig: try JSONValue.parse(bytes))
    }

    @Test func readsTheFixture() throws {
        let set = try PromptSet(path: Self.fixture)
        #expect(set.count == 6 && set.tokenCount == 7 && set.jointDim == 24 && set.pooledDim == 20)
        #expect(set.family == .sd3)
        #expect(set.prompts.first == "a red cube on a wooden table")
        #expect(set.prompts.last == "the word \"FLOW\" written in neon letters")
        #expect(set.negativePrompts == [""])
        #expect(set.negativePromptEmbeds?.shape == [1, 7, 24] && set.negativePooledPromptEmbeds?.shape == [1, 20])
        // numpy default_rng(0).standard_normal's first float32 draw.
        #expect(abs(set.promptEmbeds.scalars[0] - 1.117622) < 1e-6)
        #expect(set.encoder?.contains("default_rng(0)") == true)
        try set.check(against: try architecture("sd35_tiny"))

        let batch = set.batch([2, 0, 2])
        #expect(batch.promptEmbeds.shape == [3, 7, 24] && batch.pooledPromptEmbeds.shape == [3, 20])
        #expect(Array(batch.promptEmbeds.scalars[0..<168]) == Array(set.promptEmbeds.scalars[336..<504]))
        #expect(Array(batch.pooledPromptEmbeds.scalars[20..<40]) == Array(set.pooledPromptEmbeds.scalars[0..<20]))
        let negative = try #require(set.negativeBatch([2, 0, 2]))
        #expect(negative.promptEmbeds.shape == [3, 7, 24])
        #expect(Array(negative.promptEmbeds.scalars[168..<336]) == set.negativePromptEmbeds!.scalars)
    }

    @Test func checksTheModel() throws {
        let set = try PromptSet(path: Self.fixture)
        let flux = failure { () throws(PromptSetError) in try set.check(against: try! architecture("flux_tiny")) }
        #expect(flux?.description == "\(Self.fixture): prompt embeddings do not fit the model FLUX-style: they were encoded for SD3 but the model is FLUX")
        let medium = failure { () throws(PromptSetError) in try set.check(against: Architecture(.sd35Medium)) }
        #expect(medium?.description == "\(Self.fixture): prompt embeddings do not fit the model SD3.5 Medium: token embeddings are 24 wide but the model's joint_attention_dim is 4096; pooled embeddings are 20 wide but the model's pooled_projection_dim is 2048")
    }

    @Test func writesAndReadsBack() throws {
        let dir = TemporaryDirectory()
        var g = SeededGenerator(seed: 3)
        func random(_ shape: [Int]) -> Tensor {
            Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -2...2, using: &g) })
        }
        let set = try PromptSet(family: .flux, prompts: ["ünïcödé ✓", "two\nlines", "\"quoted\""],
                                promptEmbeds: random([3, 5, 8]), pooledPromptEmbeds: random([3, 4]),
                                negativePrompts: ["a", "b", "c"], negativePromptEmbeds: random([3, 5, 8]),
                                negativePooledPromptEmbeds: random([3, 4]), encoder: "test")
        try set.write(to: dir.file("set.safetensors"))
        let back = try PromptSet(path: dir.file("set.safetensors"))
        #expect(back.family == .flux && back.prompts == set.prompts && back.negativePrompts == set.negativePrompts)
        #expect(back.promptEmbeds == set.promptEmbeds && back.pooledPromptEmbeds == set.pooledPromptEmbeds)
        #expect(back.negativePromptEmbeds == set.negativePromptEmbeds && back.negativePooledPromptEmbeds == set.negativePooledPromptEmbeds)
        #expect(back.encoder == "test")
        // N = P: each prompt gets its own negative row.
        #expect(back.negativeBatch([1])?.promptEmbeds.scalars == Array(set.negativePromptEmbeds!.scalars[40..<80]))
    }

    /// A fixture-like file with `change` applied to its tensors and metadata.
    func malformed(_ dir: TemporaryDirectory, _ name: String,
                   _ change: (inout [String: (DType, [Int], [Float])], inout [String: String]) -> Void) throws -> String {
        let source = try SafeTensorsFile(path: Self.fixture)
        var tensors: [String: (DType, [Int], [Float])] = [:]
        for info in source.tensors { tensors[info.name] = (info.dtype, info.shape, try source.floats(of: info)) }
        var metadata = Dictionary(uniqueKeysWithValues: (source.header.metadata ?? []).map { ($0.key, $0.value) })
        change(&tensors, &metadata)
        let path = dir.file(name)
        try SafeTensorsWriter.write(to: path, tensors: tensors.sorted { $0.key < $1.key }.map { name, t in
            let bytes: [UInt8] = t.0 == .i32 ? t.2.flatMap { v in withUnsafeBytes(of: Int32(v).littleEndian, Array.init) }
                                             : t.2.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init) }
            return (spec: TensorSpec(name: name, dtype: t.0, shape: t.1), bytes: bytes)
        }, metadata: metadata.isEmpty ? nil : metadata)
        return path
    }

    @Test func malformedFilesAreClearErrors() throws {
        let dir = TemporaryDirectory()
        typealias Change = (inout [String: (DType, [Int], [Float])], inout [String: String]) -> Void
        let cases: [(String, Change, String)] = [
            ("missing", { t, _ in t["pooled_prompt_embeds"] = nil },
             "tensor 'pooled_prompt_embeds': missing: a prompt set needs prompt_embeds and pooled_prompt_embeds"),
            ("half-negative", { t, _ in t["negative_pooled_prompt_embeds"] = nil },
             "tensor 'negative_pooled_prompt_embeds': missing"),
            ("mismatched-p", { t, _ in t["pooled_prompt_embeds"] = (.f32, [5, 20], Array(t["pooled_prompt_embeds"]!.2[0..<100])) },
             "tensor 'pooled_prompt_embeds' (byte "),
            ("rank", { t, _ in t["prompt_embeds"]!.1 = [6, 168] },
             "shape [6, 168] must be [P, T, joint_dim] with every size positive"),
            ("negative-tokens", { t, _ in t["negative_prompt_embeds"] = (.f32, [1, 6, 24], Array(t["negative_prompt_embeds"]!.2[0..<144])) },
             "shape [1, 6, 24] must be [N, 7, 24] with N = 1 or 6, like prompt_embeds [6, 7, 24]"),
            ("count", { _, m in m[PromptSet.promptsKey] = #"["a", "b", "c", "d", "e"]"# },
             "metadata 'flowguard.prompts' (byte 9): lists 5 prompts but prompt_embeds holds 6"),
            ("bad-json", { _, m in m[PromptSet.promptsKey] = #"["a", "b""# },
             "metadata 'flowguard.prompts' (byte 9): not valid JSON"),
            ("not-strings", { _, m in m[PromptSet.promptsKey] = "[1, 2, 3, 4, 5, 6]" },
             "metadata 'flowguard.prompts' (byte 9): element 0 is not a string (1)"),
            ("family", { _, m in m[PromptSet.familyKey] = "sdxl" },
             "metadata 'flowguard.model_family' (byte 9): 'sdxl' is not a model family (sd3 or flux)"),
            ("no-family", { _, m in m[PromptSet.familyKey] = nil }, "metadata 'flowguard.model_family' (byte 9): missing"),
            ("no-metadata", { _, m in m = [:] }, "metadata 'flowguard.model_family': the file has no __metadata__"),
            ("negative-strings", { _, m in m[PromptSet.negativePromptsKey] = #"["", "x"]"# },
             "metadata 'flowguard.negative_prompts' (byte 9): lists 2 prompts but negative_prompt_embeds holds 1"),
            ("dtype", { t, _ in t["pooled_prompt_embeds"]!.0 = .i32 }, "dtype I32 is not a float type (F32, F16 or BF16)"),
        ]
        for (name, change, words) in cases {
            let path = try malformed(dir, name + ".safetensors", change)
            let error = failure { () throws(PromptSetError) in _ = try PromptSet(path: path) }
            #expect(error?.description.hasPrefix(path + ": ") == true, "\(name): \(String(describing: error))")
            #expect(error?.description.contains(words) == true, "\(name): \(String(describing: error))")
        }
    }

    @Test func nonFiniteValuesNameTheirByte() throws {
        let dir = TemporaryDirectory()
        let path = try malformed(dir, "nan.safetensors") { t, _ in t["prompt_embeds"]!.2[3 * 24 + 5] = .nan }
        let file = try SafeTensorsFile(path: path)
        let offset = file.fileOffset(of: try file.info("prompt_embeds")) + (3 * 24 + 5) * 4
        let error = failure { () throws(PromptSetError) in _ = try PromptSet(path: path) }
        #expect(error?.description == "\(path): tensor 'prompt_embeds' (byte \(offset)): non-finite value nan at index [0, 3, 5]")
        let inf = failure { () throws(PromptSetError) in
            _ = try PromptSet(family: .sd3, prompts: ["a"], promptEmbeds: Tensor(shape: [1, 1, 2], scalars: [0, .infinity]),
                              pooledPromptEmbeds: Tensor(shape: [1, 1], scalars: [0]))
        }
        #expect(inf?.description == "(memory): tensor 'prompt_embeds': non-finite value inf at index [0, 0, 1]")
    }

    @Test func notASafetensorsFileIsTheReadersError() throws {
        let dir = TemporaryDirectory()
        try writeBytes([1, 2, 3], to: dir.file("tiny.safetensors"))
        let error = failure { () throws(PromptSetError) in _ = try PromptSet(path: dir.file("tiny.safetensors")) }
        #expect(error?.description.hasPrefix("\(dir.file("tiny.safetensors")): file too small") == true, "\(String(describing: error))")
        let missing = failure { () throws(PromptSetError) in _ = try PromptSet(path: dir.file("absent.safetensors")) }
        #expect(missing?.description.contains("open failed") == true)
    }
}

/// The `PromptSetError` thrown by `body`, or nil.
private func failure(_ body: () throws(PromptSetError) -> Void) -> PromptSetError? {
    do { try body() } catch { return error }
    return nil
}
