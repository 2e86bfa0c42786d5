import Testing
import BLAS
import TestSupport

@Suite struct SVDTests {
    static func random(_ rows: Int, _ columns: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        return (0..<(rows * columns)).map { _ in Float.random(in: -1...1, using: &rng) }
    }

    static func relativeError(_ a: [Float], _ b: [Float]) -> Double {
        var num = 0.0, den = 0.0
        for (x, y) in zip(a, b) { num += Double(x - y) * Double(x - y); den += Double(y) * Double(y) }
        return den == 0 ? num.squareRoot() : (num / den).squareRoot()
    }

    /// ‖QᵀQ − I‖_max for the columns of a row-major rows×cols matrix.
    static func orthonormalityError(columnsOf q: [Float], rows: Int, cols: Int) -> Double {
        var worst = 0.0
        for i in 0..<cols {
            for j in 0..<cols {
                var dot = 0.0
                for r in 0..<rows { dot += Double(q[r * cols + i]) * Double(q[r * cols + j]) }
                worst = max(worst, abs(dot - (i == j ? 1 : 0)))
            }
        }
        return worst
    }

    static func transpose(_ a: [Float], _ rows: Int, _ cols: Int) -> [Float] {
        var t = [Float](repeating: 0, count: a.count)
        for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = a[i * cols + j] } }
        return t
    }

    @Test(arguments: [(8, 8), (20, 7), (7, 20), (1, 5), (5, 1), (64, 48)])
    func reconstructsRandomMatrices(shape: (Int, Int)) throws {
        let (m, n) = shape
        let a = Self.random(m, n, seed: UInt64(m * 100 + n))
        let svd = try BLAS.svd(a, rows: m, columns: n)
        let k = min(m, n)
        #expect(svd.rank == k && svd.u.count == m * k && svd.vt.count == k * n && svd.s.count == k)
        #expect(Self.relativeError(svd.reconstructed(), a) < 1e-5)
        #expect(Self.orthonormalityError(columnsOf: svd.u, rows: m, cols: k) < 1e-5)
        #expect(Self.orthonormalityError(columnsOf: Self.transpose(svd.vt, k, n), rows: n, cols: k) < 1e-5)
        #expect(zip(svd.s, svd.s.dropFirst()).allSatisfy { $0 >= $1 })
        #expect(svd.s.allSatisfy { $0 >= 0 })
    }

    /// A = Q1 · diag(5, 3, 2, 0.5) · Q2ᵀ with orthonormal Q1, Q2 (Householder reflections):
    /// the singular values come back exactly as built.
    @Test func knownSingularValues() throws {
        let (m, n) = (6, 4)
        func householder(_ size: Int, seed: UInt64) -> [Float] {
            var v = Self.random(size, 1, seed: seed)
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            v = v.map { $0 / norm }
            var h = [Float](repeating: 0, count: size * size)
            for i in 0..<size { for j in 0..<size { h[i * size + j] = (i == j ? 1 : 0) - 2 * v[i] * v[j] } }
            return h
        }
        let q1 = householder(m, seed: 1), q2 = householder(n, seed: 2)
        let sigma: [Float] = [5, 3, 2, 0.5]
        var d = [Float](repeating: 0, count: m * n)
        for i in 0..<n { d[i * n + i] = sigma[i] }
        let a = BLAS.matmul(BLAS.matmul(q1, d, m: m, k: m, n: n), Self.transpose(q2, n, n), m: m, k: n, n: n)
        let svd = try BLAS.svd(a, rows: m, columns: n)
        for (x, y) in zip(svd.s, sigma) { #expect(abs(x - y) < 1e-5) }
        let t = svd.truncated(rank: 2)
        #expect(abs(t.capturedEnergy - (25.0 + 9) / (25 + 9 + 4 + 0.25)) < 1e-6)
        #expect(abs(t.truncationError - (4.0 + 0.25).squareRoot()) < 1e-5)
        #expect(abs(Self.relativeError(t.reconstructed(), a) - t.truncationError / t.frobeniusNorm) < 1e-5)
    }

    @Test func rankDeficientMatrices() throws {
        // rank 3: (12×3)·(3×9)
        let (m, n, r) = (12, 9, 3)
        let a = BLAS.matmul(Self.random(m, r, seed: 5), Self.random(r, n, seed: 6), m: m, k: r, n: n)
        let svd = try BLAS.svd(a, rows: m, columns: n)
        #expect(svd.s[r - 1] > 1e-2)
        #expect(svd.s[r...].allSatisfy { $0 < 1e-5 * svd.s[0] })
        let t = try BLAS.truncatedSVD(a, rows: m, columns: n, rank: r)
        #expect(t.rank == r && t.u.count == m * r && t.vt.count == r * n)
        #expect(Self.relativeError(t.reconstructed(), a) < 1e-5)
        #expect(t.capturedEnergy > 1 - 1e-9)
        // The zero matrix: all singular values 0, reconstruction 0.
        let zero = try BLAS.svd([Float](repeating: 0, count: 12), rows: 3, columns: 4)
        #expect(zero.s == [0, 0, 0])
        #expect(zero.reconstructed().allSatisfy { $0 == 0 })
        #expect(zero.capturedEnergy == 1)
    }

    @Test func rankIsCapped() throws {
        let a = Self.random(5, 3, seed: 9)
        let t = try BLAS.truncatedSVD(a, rows: 5, columns: 3, rank: 10)
        #expect(t.rank == 3)
        #expect(Self.relativeError(t.reconstructed(), a) < 1e-5)
    }

    @Test func badInputIsAnError() {
        #expect(throws: SVDError.nonFiniteInput(index: 2)) {
            try BLAS.svd([1, 2, .nan, 4], rows: 2, columns: 2)
        }
        #expect(throws: SVDError.badShape(rows: 2, columns: 3, count: 4)) {
            try BLAS.svd([1, 2, 3, 4], rows: 2, columns: 3)
        }
        #expect(SVDError.notConverged(info: 3).description == "SVD: LAPACK sgesdd did not converge (info 3).")
    }
}
