import Testing
import Checkpoints
import JSON
import SafeTensors
import TestSupport

/// Detection on the committed fixtures made by diffusers itself: every file of each model is
/// recognised with the right family, layout and prefix, and the derived diffusers config agrees
/// with the `config.json` diffusers wrote, key by key, except for the values that weights cannot
/// carry (`sample_size`; FLUX `axes_dims_rope` at a head size other than 128), which the
/// architecture must say it did not derive.
@Suite struct FixtureDetectionTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var path: String
        var family: ModelFamily
        var layout: KeyLayout
        var prefix: KeyPrefix
        var configPath: String
        var testDescription: String { path }
    }

    static let cases: [Case] = [
        Case(path: "fixtures/sd35_tiny/original.safetensors", family: .sd3, layout: .original, prefix: .sai, configPath: "fixtures/sd35_tiny/diffusers/config.json"),
        Case(path: "fixtures/sd35_tiny/diffusers", family: .sd3, layout: .diffusers, prefix: .none, configPath: "fixtures/sd35_tiny/diffusers/config.json"),
        Case(path: "fixtures/sd35_tiny/diffusers_sharded", family: .sd3, layout: .diffusers, prefix: .none, configPath: "fixtures/sd35_tiny/diffusers/config.json"),
        Case(path: "fixtures/flux_tiny/original.safetensors", family: .flux, layout: .original, prefix: .none, configPath: "fixtures/flux_tiny/diffusers/config.json"),
        Case(path: "fixtures/flux_tiny/original_comfy.safetensors", family: .flux, layout: .original, prefix: .comfy, configPath: "fixtures/flux_tiny/diffusers/config.json"),
        Case(path: "fixtures/flux_tiny/diffusers", family: .flux, layout: .diffusers, prefix: .none, configPath: "fixtures/flux_tiny/diffusers/config.json"),
        Case(path: "fixtures/flux_tiny/diffusers_sharded", family: .flux, layout: .diffusers, prefix: .none, configPath: "fixtures/flux_tiny/diffusers/config.json"),
    ]

    @Test(arguments: cases)
    func detectsFixture(_ c: Case) throws {
        let collection = try TensorCollection(path: Repository.path(c.path))
        let detected = try Architecture.detect(collection.infos)
        #expect(detected.architecture.family == c.family)
        #expect(detected.layout == c.layout)
        #expect(detected.prefix == c.prefix)

        let ours = try JSONValue.parse(Array(detected.architecture.diffusersConfigJSON().utf8))
        let theirs = try JSONValue.parse(try readBytes(Repository.path(c.configPath)))
        let skipped: Set<String> = ["_diffusers_version", "sample_size"]
        var compared = 0
        for (key, value) in theirs.objectMembers ?? [] where !skipped.contains(key) {
            if detected.architecture.underivedConfigKeys.contains(key) {
                #expect(ours[key] == .null, "\(key) is not derivable and must be null")
                continue
            }
            // diffusers writes FLUX out_channels as null when it equals in_channels.
            if key == "out_channels", value == .null { continue }
            #expect(ours[key] == value, "\(key): ours \(String(describing: ours[key])), diffusers \(value)")
            compared += 1
        }
        #expect(compared >= 10)
    }

    /// The all-in-one fixtures (SD3 as SAI ships it, FLUX as ComfyUI saves it) split into the
    /// components their prefixes name, and their transformer is detected as the plain file is.
    @Test func allInOneFixturesSplitIntoComponentsAndTheirTransformerIsDetected() throws {
        let fixtures: [(path: String, family: ModelFamily, prefixes: [String])] = [
            ("fixtures/sd35_tiny/allinone.safetensors", .sd3,
             ["model.diffusion_model.", "text_encoders.clip_l.", "text_encoders.clip_g.", "text_encoders.t5xxl.", "first_stage_model."]),
            ("fixtures/flux_tiny/allinone.safetensors", .flux,
             ["model.diffusion_model.", "text_encoders.clip_l.", "text_encoders.t5xxl.", "vae."]),
        ]
        for fixture in fixtures {
            let collection = try TensorCollection(path: Repository.path(fixture.path))
            let components = try #require(AllInOne.components(collection.infos), "\(fixture.path)")
            #expect(components.map(\.prefix) == fixture.prefixes)
            #expect(components.reduce(0) { $0 + $1.tensors.count } == collection.infos.count)
            let transformer = collection.transformerOnly()
            #expect(transformer.infos.count == components[0].tensors.count)
            let detected = try Architecture.detect(transformer.infos)
            #expect(detected.architecture.family == fixture.family)
            #expect(detected.layout == .original)
            #expect(detected.prefix == .sai)
        }
        let plain = try TensorCollection(path: Repository.path("fixtures/flux_tiny/original.safetensors"))
        #expect(AllInOne.components(plain.infos) == nil)
    }

    @Test func fullSizeVariantsAreNamed() throws {
        for variant in [KnownVariant.sd35Medium, .sd35Large, .sd3Medium, .flux1Dev, .flux1Schnell] {
            for layout in [KeyLayout.original, .diffusers] {
                let specs = syntheticSpecs(variant: variant, layout: layout, dtype: .bf16)
                let detected = try Architecture.detect(specs.map { TensorShapeEntry($0) })
                #expect(detected.architecture.variant == variant, "\(variant) \(layout)")
                #expect(detected.layout == layout)
            }
        }
    }
}
