import Checkpoints
import Foundation
import LoRA
import SafeTensors
import TensorRuntime
import TestSupport
import Transformers
import XCTest

/// ΔW = Σ scale · up · down of every module of a set, [out, in] row-major, in Double.
func deltas(_ set: AdapterSet) -> [String: (shape: [Int], values: [Double])] {
    var out: [String: (shape: [Int], values: [Double])] = [:]
    for (name, branches) in set.modules {
        for branch in branches {
            let rows = branch.up.shape[0], rank = branch.up.shape[1], columns = branch.down.shape[1]
            var values = out[name]?.values ?? [Double](repeating: 0, count: rows * columns)
            for i in 0..<rows {
                for k in 0..<rank {
                    let u = Double(branch.scale) * Double(branch.up.scalars[i * rank + k])
                    if u == 0 { continue }
                    for j in 0..<columns { values[i * columns + j] += u * Double(branch.down.scalars[k * columns + j]) }
                }
            }
            out[name] = ([rows, columns], values)
        }
    }
    return out
}

/// Largest |a − b| over the union of modules (a missing module counts as zero), relative to the
/// largest |a|.
func relativeDifference(_ a: [String: (shape: [Int], values: [Double])],
                        _ b: [String: (shape: [Int], values: [Double])]) -> Double {
    var worst = 0.0, scale = 0.0
    for (_, d) in a { scale = max(scale, d.values.map(abs).max() ?? 0) }
    for name in Set(a.keys).union(b.keys) {
        let x = a[name]?.values, y = b[name]?.values
        if let x, let y, x.count != y.count { return .infinity }
        let n = x?.count ?? y!.count
        for i in 0..<n { worst = max(worst, abs((x?[i] ?? 0) - (y?[i] ?? 0))) }
    }
    return worst / max(scale, 1e-300)
}

/// Writes an adapter with the given modules in diffusers naming as a diffusers-format file.
func writeDiffusersAdapter(_ modules: [LoRAModule], family: ModelFamily, to path: String) throws {
    let adapter = LoRAAdapter(modules: modules, layout: .diffusers, format: .diffusers, family: family)
    try LoRAWriter.write(adapter, format: .diffusers, to: path)
}

/// A module with deterministic factors.
func module(_ name: String, rank: Int, in inFeatures: Int, out outFeatures: Int, seed: UInt64 = 1) -> LoRAModule {
    var g = SeededGenerator(seed: seed)
    let down = (0..<(rank * inFeatures)).map { _ in Float.random(in: -1...1, using: &g) }
    let up = (0..<(outFeatures * rank)).map { _ in Float.random(in: -1...1, using: &g) }
    return LoRAModule(name: name, down: Matrix(shape: [rank, inFeatures], values: down),
                      up: Matrix(shape: [outFeatures, rank], values: up), alpha: Float(rank))
}

final class AdapterSetTests: XCTestCase {
    func testFixtureAdaptersLoad() throws {
        for fixture in WeightFixture.allCases {
            for weights in [try TransformerWeights(path: fixture.diffusers),
                            try TransformerWeights(path: fixture.original, configPath: fixture.config)] {
                let file = try AdapterSet(path: fixture.loraFile, scale: 1, for: weights)
                let peft = try AdapterSet(path: fixture.peftFolder, scale: 0.5, for: weights)
                XCTAssertEqual(file.modules.count, 31, fixture.rawValue)
                XCTAssertEqual(Set(file.modules.keys), Set(peft.modules.keys))
                for (name, branches) in file.modules {
                    XCTAssertEqual(branches.count, 1)
                    let b = branches[0]
                    XCTAssertEqual(b.scale, 2, "α/r = 8/4")
                    XCTAssertEqual(b.down.shape[0], 4)
                    XCTAssertEqual(b.up.shape[1], 4)
                    let shape = try weights.shape(of: name + ".weight")
                    XCTAssertEqual([b.up.shape[0], b.down.shape[1]], shape)
                    XCTAssertEqual(peft.modules[name]![0].scale, 1)
                    XCTAssertEqual(peft.modules[name]![0].up, b.up)
                    XCTAssertEqual(peft.modules[name]![0].down, b.down)
                }
                XCTAssertNil(file.modules["proj_out"], "the top-level proj_out is not adapted")
            }
        }
    }

    func testEveryDialectGivesTheSameDelta() throws {
        let folder = TemporaryDirectory()
        for fixture in WeightFixture.allCases {
            let weights = try TransformerWeights(path: fixture.original, configPath: fixture.config)
            let reference = deltas(try AdapterSet(path: fixture.loraFile, scale: 1, for: weights))
            let adapter = try LoRAReader.read(path: fixture.loraFile)
            for format in [LoRAFormat.kohya, .comfy, .peft] {
                let path = folder.file("\(fixture.rawValue)_\(format.rawValue)" + (format == .peft ? "" : ".safetensors"))
                try LoRAWriter.write(adapter, format: format, to: path, architecture: weights.architecture)
                let set = try AdapterSet(path: path, scale: 1, for: weights)
                let difference = relativeDifference(reference, deltas(set))
                XCTAssertLessThanOrEqual(difference, 1e-6, "\(fixture.rawValue) \(format)")
            }
        }
    }

    func testScaleMultipliesAndMergingCombines() throws {
        let weights = try TransformerWeights(path: WeightFixture.sd35.diffusers)
        let a = try AdapterSet(path: WeightFixture.sd35.loraFile, scale: 1, for: weights)
        let b = try AdapterSet(path: WeightFixture.sd35.peftFolder, scale: -0.25, for: weights)
        let merged = a.merging(b)
        XCTAssertEqual(Set(merged.modules.keys), Set(a.modules.keys))
        for (name, branches) in merged.modules {
            XCTAssertEqual(branches.map(\.scale), [2, -0.5], name)
        }
        // ΔW of the merged set is (1 − 0.25) × the adapter's own ΔW.
        let single = deltas(a)
        var expected = single
        for (name, d) in single { expected[name] = (d.shape, d.values.map { $0 * 0.75 }) }
        XCTAssertLessThanOrEqual(relativeDifference(expected, deltas(merged)), 1e-6)
        XCTAssertTrue(AdapterSet().merging(AdapterSet()).modules.isEmpty)
        XCTAssertEqual(AdapterSet().merging(a).modules.count, a.modules.count)
    }

    func testAdapterForAnotherFamilyIsRefused() throws {
        let flux = try TransformerWeights(path: WeightFixture.flux.diffusers)
        XCTAssertThrowsError(try AdapterSet(path: WeightFixture.sd35.loraFile, scale: 1, for: flux)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(WeightFixture.sd35.loraFile), text)
            XCTAssertTrue(text.contains("SD3") && text.contains("FLUX"), text)
        }
        let sd3 = try TransformerWeights(path: WeightFixture.sd35.diffusers)
        XCTAssertThrowsError(try AdapterSet(path: WeightFixture.flux.peftFolder, scale: 1, for: sd3)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("FLUX") && text.contains("SD3"), text)
        }
    }

    func testAdapterOfAnotherWidthIsRefused() throws {
        let folder = TemporaryDirectory()
        let path = folder.file("wide.safetensors")
        try writeDiffusersAdapter([module("transformer_blocks.0.attn.to_q", rank: 2, in: 64, out: 64),
                                   module("transformer_blocks.0.attn2.to_k", rank: 2, in: 64, out: 64)],
                                  family: .sd3, to: path)
        let sd3 = try TransformerWeights(path: WeightFixture.sd35.diffusers)
        XCTAssertThrowsError(try AdapterSet(path: path, scale: 1, for: sd3)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(path) && text.contains("width 64") && text.contains("width 32"), text)
        }
    }

    func testModuleThatDoesNotFitIsNamed() throws {
        let folder = TemporaryDirectory()
        let sd3 = try TransformerWeights(path: WeightFixture.sd35.diffusers)
        // Right width, wrong output rows for this module.
        let rows = folder.file("rows.safetensors")
        try writeDiffusersAdapter([module("transformer_blocks.0.attn.to_q", rank: 2, in: 32, out: 32),
                                   module("transformer_blocks.1.ff.net.0.proj", rank: 2, in: 32, out: 100)],
                                  family: .sd3, to: rows)
        XCTAssertThrowsError(try AdapterSet(path: rows, scale: 1, for: sd3)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("transformer_blocks.1.ff.net.0.proj"), text)
        }
        // A block the model does not have.
        let deep = folder.file("deep.safetensors")
        try writeDiffusersAdapter([module("transformer_blocks.0.attn2.to_q", rank: 2, in: 32, out: 32),
                                   module("transformer_blocks.7.attn.to_q", rank: 2, in: 32, out: 32)],
                                  family: .sd3, to: deep)
        XCTAssertThrowsError(try AdapterSet(path: deep, scale: 1, for: sd3)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("transformer_blocks.7.attn.to_q"), text)
        }
    }

    func testNonFiniteAdapterIsRefused() throws {
        let folder = TemporaryDirectory()
        var adapter = try LoRAReader.read(path: WeightFixture.sd35.loraFile)
        adapter.modules[3].up.values[5] = .nan
        let path = folder.file("nan.safetensors")
        try LoRAWriter.write(adapter, format: .diffusers, to: path)
        let sd3 = try TransformerWeights(path: WeightFixture.sd35.diffusers)
        XCTAssertThrowsError(try AdapterSet(path: path, scale: 1, for: sd3)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(path), text)
            XCTAssertTrue(text.contains(adapter.modules[3].name) && text.contains("NaN"), text)
        }
        XCTAssertThrowsError(try AdapterSet(path: WeightFixture.sd35.loraFile, scale: .infinity, for: sd3))
    }

    func testRankMismatchIsRefused() throws {
        let folder = TemporaryDirectory()
        let path = folder.file("rank.safetensors")
        func f32(_ name: String, _ shape: [Int]) -> (spec: TensorSpec, bytes: [UInt8]) {
            let values = [Float](repeating: 0.01, count: shape.reduce(1, *))
            return (TensorSpec(name: name, dtype: .f32, shape: shape), values.withUnsafeBytes { Array($0) })
        }
        try SafeTensorsWriter.write(to: path, tensors: [
            f32("transformer.transformer_blocks.0.attn.to_q.lora_A.weight", [4, 32]),
            f32("transformer.transformer_blocks.0.attn.to_q.lora_B.weight", [32, 3]),
        ])
        let sd3 = try TransformerWeights(path: WeightFixture.sd35.diffusers)
        XCTAssertThrowsError(try AdapterSet(path: path, scale: 1, for: sd3)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(path) && text.contains("rank"), text)
            XCTAssertTrue(text.contains("transformer.transformer_blocks.0.attn.to_q.lora_B.weight"), text)
        }
    }

    func testBiasesZeroDroppedNonzeroRefused() throws {
        let folder = TemporaryDirectory()
        let sd3 = try TransformerWeights(path: WeightFixture.sd35.diffusers)
        var m = module("transformer_blocks.0.attn2.to_q", rank: 2, in: 32, out: 32)
        m.upBias = Matrix(shape: [32], values: [Float](repeating: 0, count: 32))
        let zero = folder.file("zero_bias.safetensors")
        try writeDiffusersAdapter([m], family: .sd3, to: zero)
        let set = try AdapterSet(path: zero, scale: 1, for: sd3)
        XCTAssertEqual(set.modules.count, 1)
        m.upBias!.values[3] = 0.5
        let nonzero = folder.file("bias.safetensors")
        try writeDiffusersAdapter([m], family: .sd3, to: nonzero)
        XCTAssertThrowsError(try AdapterSet(path: nonzero, scale: 1, for: sd3)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("transformer_blocks.0.attn2.to_q") && text.contains("bias"), text)
        }
    }

    func testUnreadableAdapterNamesTheFile() throws {
        let sd3 = try TransformerWeights(path: WeightFixture.sd35.diffusers)
        // A transformer checkpoint is not an adapter.
        XCTAssertThrowsError(try AdapterSet(path: WeightFixture.sd35.original, scale: 1, for: sd3)) { error in
            XCTAssertTrue("\(error)".contains(WeightFixture.sd35.original), "\(error)")
        }
        let missing = "/nonexistent/adapter.safetensors"
        XCTAssertThrowsError(try AdapterSet(path: missing, scale: 1, for: sd3)) { error in
            XCTAssertTrue("\(error)".contains(missing), "\(error)")
        }
    }
}
