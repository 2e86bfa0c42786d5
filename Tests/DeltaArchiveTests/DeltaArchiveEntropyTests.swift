import Foundation
import Testing
import DeltaArchive
import SafeTensors
import TestSupport

/// The archive reaches the order-0 entropy bound of the byte planes on Gaussian weights (the
/// ceiling for lossless coding of trained floats), also for LoRA-sized tensors, where one
/// Huffman table over two planes would lose most of the gain.
@Suite struct DeltaArchiveEntropyTests {
    /// Σ over byte positions of the Shannon entropy of that position's byte histogram, in bytes.
    static func planeBound(_ bytes: [UInt8], width: Int) -> Double {
        var total = 0.0
        let n = bytes.count / width
        for p in 0..<width {
            var histogram = [Int](repeating: 0, count: 256)
            for i in 0..<n { histogram[Int(bytes[i * width + p])] += 1 }
            let h = histogram.reduce(0.0) { acc, c in c == 0 ? acc : acc - Double(c) / Double(n) * log2(Double(c) / Double(n)) }
            total += h * Double(n) / 8
        }
        return total
    }

    @Test(arguments: [DType.bf16, .f32])
    func archiveIsWithinThreePercentOfThePlaneBound(dtype: DType) throws {
        let dir = TemporaryDirectory()
        var rng = SeededGenerator(seed: 21)
        // 16 LoRA-shaped factors [32, 1536] of N(0, 0.02²) (Box–Muller).
        var tensors: [(spec: TensorSpec, bytes: [UInt8])] = []
        var all: [UInt8] = []
        for t in 0..<16 {
            let values: [Float] = (0..<(32 * 1536)).map { _ in
                let u1 = Double.random(in: Double.ulpOfOne..<1, using: &rng), u2 = Double.random(in: 0..<1, using: &rng)
                return Float(0.02 * (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
            }
            var bytes = [UInt8](repeating: 0, count: dtype.byteCount(elements: values.count)!)
            values.withUnsafeBufferPointer { v in bytes.withUnsafeMutableBytes { _ = FloatCodec.encode(dtype, from: v, into: $0) } }
            tensors.append((TensorSpec(name: "m\(t).lora_A.weight", dtype: dtype, shape: [32, 1536]), bytes))
            all += bytes
        }
        let input = dir.file("a.safetensors")
        try SafeTensorsWriter.write(to: input, tensors: tensors)
        let archive = dir.file("a.fgdelta")
        _ = try DeltaArchive.pack(input: input, output: archive, options: PackOptions(threads: 2))
        let size = Double(try FileManager.default.attributesOfItem(atPath: archive)[.size] as! Int)
        let bound = Self.planeBound(all, width: dtype.bits / 8)
        #expect(size <= bound * 1.03, "\(dtype): archive \(Int(size)) bytes, plane bound \(Int(bound))")
        #expect(size < Double(all.count), "the archive is smaller than the raw tensors")
    }
}
