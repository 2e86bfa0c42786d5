@testable import Checkpoints
import SafeTensors
import Testing

@Suite struct DetectionTests {
    static let cases: [(KnownVariant, KeyLayout, KeyPrefix)] = KnownVariant.allCases.flatMap { v in
        [(v, KeyLayout.diffusers, KeyPrefix.none)] + KeyPrefix.allCases.map { (v, KeyLayout.original, $0) }
    }

    @Test(arguments: cases)
    func detectsPublishedModels(variant: KnownVariant, layout: KeyLayout, prefix: KeyPrefix) throws {
        let specs = syntheticSpecs(variant: variant, layout: layout, dtype: .bf16, prefix: prefix)
        let detected = try Architecture.detect(specs.map(TensorShapeEntry.init))
        #expect(detected.architecture.variant == variant)
        #expect(detected.architecture.name == variant.rawValue)
        #expect(detected.layout == layout)
        #expect(detected.prefix == prefix)
    }

    @Test(arguments: [KeyLayout.original, .diffusers], KeyPrefix.allCases)
    func detectsTinyModels(layout: KeyLayout, prefix: KeyPrefix) throws {
        for tiny in [Tiny.sd3, Tiny.flux] {
            let detected = try Architecture.detect(tiny.expectedTensors(layout: layout, prefix: prefix))
            #expect(detected.architecture == tiny)
            #expect(detected.architecture.variant == nil)
            #expect(detected.architecture.name == tiny.family.customName)
            #expect(detected.layout == layout)
            #expect(detected.prefix == (layout == .original ? prefix : KeyPrefix.none))
        }
    }

    @Test func acceptsTensorInfos() throws {
        var offset = 0
        let infos = Tiny.flux.syntheticSpecs(layout: .original, dtype: .f32).map { spec -> TensorInfo in
            defer { offset += spec.byteCount! }
            return TensorInfo(name: spec.name, dtype: spec.dtype, shape: spec.shape, dataRange: offset..<offset + spec.byteCount!)
        }
        #expect(try Architecture.detect(infos).architecture == Tiny.flux)
    }

    @Test func sd3WithoutQKNorm() throws {
        let wide = try Architecture(config: .sd3(SD3Config(hiddenSize: 128, numLayers: 2, attentionHeadDim: 64,
                                                           attentionHeadDimIsAssumed: true, qkNorm: false, posEmbedMaxSize: 4)))
        let detected = try Architecture.detect(wide.expectedTensors(layout: .diffusers))
        guard let c = detected.architecture.config.typed(SD3Config.self) else { Issue.record("not SD3"); return }
        #expect(c.attentionHeadDim == 64 && c.attentionHeadDimIsAssumed && c.numAttentionHeads == 2)
        #expect(detected.architecture.notes.first?.contains("assumed") == true)

        let narrow = try Architecture(config: .sd3(SD3Config(hiddenSize: 32, numLayers: 2, attentionHeadDim: nil,
                                                             qkNorm: false, posEmbedMaxSize: 4)))
        let n = try Architecture.detect(narrow.expectedTensors(layout: .original))
        #expect(n.architecture.underivedConfigKeys == ["attention_head_dim", "num_attention_heads"])
        #expect(n.architecture.diffusersConfigJSON().contains("\"attention_head_dim\": null"))
    }

    @Test func sd35MediumConfigJSON() {
        let json = Architecture(.sd35Medium).diffusersConfigJSON()
        let expected = """
        {
          "_class_name": "SD3Transformer2DModel",
          "attention_head_dim": 64,
          "caption_projection_dim": 1536,
          "dual_attention_layers": [
            0,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12
          ],
          "in_channels": 16,
          "joint_attention_dim": 4096,
          "num_attention_heads": 24,
          "num_layers": 24,
          "out_channels": 16,
          "patch_size": 2,
          "pooled_projection_dim": 2048,
          "pos_embed_max_size": 384,
          "qk_norm": "rms_norm",
          "sample_size": 128
        }

        """
        #expect(json == expected)
        #expect(Architecture(.sd3Medium).diffusersConfigJSON().contains("\"qk_norm\": null"))
        #expect(Architecture(.sd3Medium).diffusersConfigJSON().contains("\"dual_attention_layers\": [],"))
    }

    @Test func fluxConfigJSON() {
        let json = Architecture(.flux1Dev).diffusersConfigJSON()
        let expected = """
        {
          "_class_name": "FluxTransformer2DModel",
          "attention_head_dim": 128,
          "axes_dims_rope": [
            16,
            56,
            56
          ],
          "guidance_embeds": true,
          "in_channels": 64,
          "joint_attention_dim": 4096,
          "num_attention_heads": 24,
          "num_layers": 19,
          "num_single_layers": 38,
          "out_channels": 64,
          "patch_size": 1,
          "pooled_projection_dim": 768
        }

        """
        #expect(json == expected)
        #expect(Architecture(.flux1Fill).diffusersConfigJSON().contains("\"in_channels\": 384"))
        #expect(Tiny.flux.diffusersConfigJSON().contains("\"axes_dims_rope\": null"))
        #expect(Tiny.flux.underivedConfigKeys == ["axes_dims_rope"])
        #expect(Tiny.flux.notes.first?.contains("--config") == true)
    }

    @Test func summaries() {
        #expect(Architecture(.sd35Medium).summary
                == "SD3.5 Medium (24 blocks, hidden 1536, 24 heads × 64, attn2 on blocks 0–12, RMS q/k norm, pos table 384²)")
        #expect(Tiny.flux.summary.hasPrefix("FLUX-style (2 double + 3 single blocks, hidden 32"))
    }

    @Test func recogniseLayoutWithGivenArchitecture() throws {
        let specs = Tiny.sd3.expectedTensors(layout: .original, prefix: .comfy)
        let found = try Tiny.sd3.recogniseLayout(of: specs)
        #expect(found.layout == .original && found.prefix == .comfy)
        #expect(throws: CheckpointError.self) { try Tiny.flux.recogniseLayout(of: specs) }
    }
}
