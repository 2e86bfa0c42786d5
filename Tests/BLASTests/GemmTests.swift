import Testing
import BLAS
import TestSupport

@Suite struct GemmTests {
    /// sgemm against a plain triple loop in Double, every transpose combination.
    @Test func gemmMatchesNaiveProduct() {
        var rng = SeededGenerator(seed: 11)
        let (m, n, k) = (7, 5, 9)
        for transA in [BLAS.Transpose.none, .transposed] {
            for transB in [BLAS.Transpose.none, .transposed] {
                let a = (0..<(m * k)).map { _ in Float.random(in: -1...1, using: &rng) }
                let b = (0..<(k * n)).map { _ in Float.random(in: -1...1, using: &rng) }
                func aAt(_ i: Int, _ p: Int) -> Double { Double(transA == .none ? a[i * k + p] : a[p * m + i]) }
                func bAt(_ p: Int, _ j: Int) -> Double { Double(transB == .none ? b[p * n + j] : b[j * k + p]) }
                var c = [Float](repeating: 1, count: m * n)
                a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                    BLAS.gemm(transA, transB, m: m, n: n, k: k, alpha: 0.5, a: pa.baseAddress!, b: pb.baseAddress!, beta: 2, c: pc.baseAddress!)
                } } }
                for i in 0..<m {
                    for j in 0..<n {
                        let expected = 0.5 * (0..<k).reduce(0.0) { $0 + aAt(i, $1) * bAt($1, j) } + 2
                        #expect(abs(Double(c[i * n + j]) - expected) < 1e-5, "\(transA) \(transB) [\(i),\(j)]")
                    }
                }
            }
        }
    }
}
