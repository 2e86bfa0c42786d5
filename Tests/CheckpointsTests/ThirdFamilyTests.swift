import Checkpoints
import Foundation
import JSON
import SafeTensors
import Testing

// A made-up third family, defined entirely here and registered in one place (`families` below):
// an embedding, blocks with a fused qkv and an output projection, and a modulation whose halves
// swap between layouts. Nothing in the library knows it.

/// The toy family's sizes.
struct ToyConfig: FamilyConfiguration {
    var hiddenSize: Int
    var numLayers: Int
    var inChannels: Int
    var jointAttentionDim: Int { 0 }
    var pooledProjectionDim: Int { 0 }

    var family: ModelFamily { .toy }

    func validate() throws(CheckpointError) {
        try requireConfig(hiddenSize > 0 && inChannels > 0, "toy sizes must be positive")
        try requireConfig(numLayers > 0, "a toy transformer needs a block")
    }

    var layoutDimensions: LayoutDimensions {
        LayoutDimensions(hidden: hiddenSize, inChannels: inChannels, jointBlocks: numLayers)
    }

    var summaryParts: [String] { ["\(numLayers) blocks", "hidden \(hiddenSize)", "\(inChannels) channels in"] }

    var diffusersConfigEntries: [(key: String, value: ConfigValue)] {
        [("hidden_size", .int(hiddenSize)), ("num_layers", .int(numLayers)), ("in_channels", .int(inChannels))]
    }
}

/// The toy family's descriptor.
struct ToyFamily: ModelFamilyDescriptor {
    var id: String { "toy" }
    var displayName: String { "TOY" }
    var diffusersClassName: String { "ToyTransformer2DModel" }
    var diffusersParentLibrary: String { "toy.models" }
    var kohyaNetworkModule: String { "networks.lora_toy" }
    var defaultLearningRate: Double { 3e-4 }
    var table: LayoutTable { ToyFamily.layout }
    var variants: [KnownVariant] { [KnownVariant(name: "Toy-1", config: ModelConfig(ToyConfig(hiddenSize: 16, numLayers: 2, inChannels: 4)))] }

    static let layout: LayoutTable = {
        let H = Extent.hidden()
        let linear = ParameterRule.linear
        return LayoutTable(family: .toy, rules: [
            LayoutRule(.global, "embed", ["toy_embedder"], linear(H, Extent(1, .inChannels))),
            LayoutRule(.joint, "blocks.{i}.qkv", ["toy_layers.{i}.to_q", "toy_layers.{i}.to_k", "toy_layers.{i}.to_v"],
                       .split([H, H, H]), linear(.hidden(3), H)),
            LayoutRule(.joint, "blocks.{i}.out", ["toy_layers.{i}.proj"], linear(H, H)),
            LayoutRule(.global, "head.mod", ["toy_norm_out.linear"], .swapHalves, linear(.hidden(2), H)),
        ])
    }()

    func deriveConfig(_ shapes: ShapeEvidence) throws(CheckpointError) -> ModelConfig {
        let embed = try shapes.anchor("embed", "weight", rank: 2)
        let layers = try shapes.blockCount(.joint)
        if layers == 0 { throw shapes.missingFirstBlock("blocks.{i}.qkv", "weight") }
        return ModelConfig(ToyConfig(hiddenSize: embed.shape[0], numLayers: layers, inChannels: embed.shape[1]))
    }

    func config(diffusers c: DiffusersConfigFields) throws(CheckpointError) -> ModelConfig {
        ModelConfig(ToyConfig(hiddenSize: try c.int("hidden_size"), numLayers: try c.int("num_layers"),
                              inChannels: try c.int("in_channels")))
    }

    func adapterConfig(width: Int, blocks: [BlockScope: [Int]], moduleNames: [String],
                       layout: KeyLayout) -> (config: ModelConfig, notes: [String]) {
        (ModelConfig(ToyConfig(hiddenSize: width, numLayers: (blocks[.joint]?.max() ?? 0) + 1, inChannels: 4)), [])
    }
}

extension ModelFamily {
    static let toy = ModelFamily(ToyFamily())
}

@Suite struct ThirdFamilyTests {
    /// The one place the toy family is registered.
    let families = ModelFamily.builtIn + [.toy]
    let toy = try! Architecture(config: ModelConfig(ToyConfig(hiddenSize: 8, numLayers: 3, inChannels: 4)))

    @Test func detectedInBothLayouts() throws {
        for layout in KeyLayout.allCases {
            let tensors = toy.expectedTensors(layout: layout)
            let detected = try Architecture.detect(tensors, families: families)
            #expect(detected.architecture == toy && detected.layout == layout && detected.prefix == .none)
            #expect(detected.architecture.family == .toy && detected.architecture.name == "TOY-style")
        }
        #expect(toy.expectedTensors(layout: .original).map(\.name) == [
            "embed.weight", "embed.bias",
            "blocks.0.qkv.weight", "blocks.0.qkv.bias", "blocks.1.qkv.weight", "blocks.1.qkv.bias",
            "blocks.2.qkv.weight", "blocks.2.qkv.bias",
            "blocks.0.out.weight", "blocks.0.out.bias", "blocks.1.out.weight", "blocks.1.out.bias",
            "blocks.2.out.weight", "blocks.2.out.bias", "head.mod.weight", "head.mod.bias",
        ])
        let published = try Architecture(config: ModelConfig(ToyConfig(hiddenSize: 16, numLayers: 2, inChannels: 4)))
        #expect(try Architecture.detect(published.expectedTensors(layout: .diffusers), families: families).architecture.name == "Toy-1")
    }

    @Test func unregisteredIsNotRecognised() {
        #expect(throws: CheckpointError.self) { try Architecture.detect(toy.expectedTensors(layout: .original)) }
        do {
            _ = try Architecture.detect(toy.expectedTensors(layout: .original))
            Issue.record("expected an error")
        } catch {
            #expect(error.description.hasPrefix("The tensors are not an SD3 or FLUX transformer in either layout; 16 unmapped keys"))
        }
        do {
            _ = try Architecture.detect([TensorShapeEntry(name: "encoder.weight", shape: [2])], families: families)
            Issue.record("expected an error")
        } catch {
            #expect(error.description.hasPrefix("The tensors are not an SD3, FLUX or TOY transformer in either layout"))
        }
    }

    @Test func builtInFamiliesStillDetectedBesideIt() throws {
        for architecture in [Tiny.sd3, Tiny.flux] {
            let detected = try Architecture.detect(architecture.expectedTensors(layout: .diffusers), families: families)
            #expect(detected.architecture == architecture)
        }
    }

    @Test func planOriginalToDiffusersAndBack() throws {
        let original = toy.expectedTensors(layout: .original)
        let forward = try ConversionPlan(tensors: original, to: .diffusers, families: families)
        #expect(forward.outputs.map(\.name) == toy.expectedTensors(layout: .diffusers).map(\.name))
        let byName = Dictionary(uniqueKeysWithValues: forward.outputs.map { ($0.name, $0) })
        #expect(byName["toy_layers.1.to_k.weight"]?.pieces == [RowSlice(source: "blocks.1.qkv.weight", rows: 8..<16)])
        #expect(byName["toy_layers.1.to_k.weight"]?.shape == [8, 8])
        #expect(byName["toy_norm_out.linear.bias"]?.pieces == [RowSlice(source: "head.mod.bias", rows: 8..<16),
                                                               RowSlice(source: "head.mod.bias", rows: 0..<8)])

        let diffusers = forward.outputs.map { TensorShapeEntry(name: $0.name, shape: $0.shape) }
        let back = try ConversionPlan(tensors: diffusers, to: .original, families: families)
        #expect(back.targetPrefix == .none)
        #expect(back.outputs.map(\.name) == original.map(\.name))
        #expect(back.outputs.map(\.shape) == original.map(\.shape))
        let qkv = back.outputs.first { $0.name == "blocks.2.qkv.weight" }
        #expect(qkv?.pieces == [RowSlice(source: "toy_layers.2.to_q.weight", rows: 0..<8),
                                RowSlice(source: "toy_layers.2.to_k.weight", rows: 0..<8),
                                RowSlice(source: "toy_layers.2.to_v.weight", rows: 0..<8)])
    }

    @Test func inspectArchitectureLine() throws {
        var offset = 0
        let infos = toy.expectedTensors(layout: .original).map { entry -> TensorInfo in
            let bytes = 4 * entry.shape.reduce(1, *)
            defer { offset += bytes }
            return TensorInfo(name: entry.name, dtype: .f32, shape: entry.shape, dataRange: offset..<offset + bytes)
        }
        let text = Architecture.inspectText(infos, families: families)
        #expect(text == "  architecture: TOY-style (3 blocks, hidden 8, 4 channels in), original layout\n"
                + "  diffusers config: { \"_class_name\": \"ToyTransformer2DModel\", \"hidden_size\": 8, \"in_channels\": 4, \"num_layers\": 3 }\n")
        #expect(Architecture.inspectText(infos).hasPrefix("  architecture: not recognised (The tensors are not an SD3 or FLUX"))
        guard case .object(let members)? = Optional(Architecture.inspectJSON(infos, families: families)) else {
            Issue.record("no architecture JSON"); return
        }
        #expect(members.first { $0.key == "name" }?.value == .string("TOY-style"))
    }

    @Test func diffusersConfigRoundTrip() throws {
        let json = try JSONValue.parse(Array(toy.diffusersConfigJSON().utf8))
        #expect(try Architecture(diffusersConfig: json, families: families) == toy)
        #expect(throws: CheckpointError.invalidConfig(
            "config.json \"_class_name\" ToyTransformer2DModel is neither SD3Transformer2DModel nor FluxTransformer2DModel")) {
            try Architecture(diffusersConfig: json)
        }
    }

    @Test func descriptorAnswersInsteadOfTheFamilySwitches() {
        #expect(ModelFamily.toy.transformerPhrase == "a TOY transformer")
        #expect(ModelFamily.sd3.transformerPhrase == "an SD3 transformer")
        #expect(KeyPrefix.defaultOriginal(for: .toy) == .none && KeyPrefix.defaultOriginal(for: .sd3) == .sai)
        #expect(LayoutTable.of(.toy).rules.count == 4)
        #expect(ModelFamily.named("toy", in: families) == .toy && ModelFamily.named("toy") == nil)
        #expect(ModelFamily.toy.defaultLearningRate == 3e-4 && ModelFamily.flux.defaultLearningRate == 2e-4)
    }

    /// docs/families.md names every requirement of the descriptor and configuration protocols
    /// this file had to provide, so the page and the code cannot drift apart.
    @Test func familiesDocumentNamesWhatThisFileProvides() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let doc = try String(contentsOf: root.appendingPathComponent("docs/families.md"), encoding: .utf8)
        for name in ["ModelFamilyDescriptor", "FamilyConfiguration", "TransformerFamily", "LayoutTable", "ShapeEvidence",
                     "deriveConfig", "config(diffusers:)", "adapterConfig", "layoutDimensions", "summaryParts",
                     "diffusersConfigEntries", "ModelFamily.builtIn", "TransformerFamily.builtIn", "forwardInputs", "sampleShape"] {
            #expect(doc.contains(name), "docs/families.md does not mention \(name)")
        }
    }
}
