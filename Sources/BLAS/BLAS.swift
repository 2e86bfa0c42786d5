import COpenBLAS

/// Dense linear algebra on row-major Float32 matrices, on OpenBLAS. This is the only file in
/// FlowGuard that talks to OpenBLAS; thread counts are chosen by the caller.
public enum BLAS {
    /// Whether an operand is used as stored or transposed.
    public enum Transpose: Sendable { case none, transposed }

    /// C = alpha · op(A) · op(B) + beta · C for row-major matrices: op(A) is m×k, op(B) is k×n,
    /// C is m×n. `lda`, `ldb`, `ldc` are the row strides as stored (default: packed).
    public static func gemm(_ transA: Transpose, _ transB: Transpose, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
                            b: UnsafePointer<Float>, ldb: Int? = nil,
                            beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil) {
        guard m > 0, n > 0 else { return }
        let lda = lda ?? (transA == .none ? k : m)
        let ldb = ldb ?? (transB == .none ? n : k)
        let ldc = ldc ?? n
        if k == 0 {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } }
            return
        }
        cblas_sgemm(CblasRowMajor,
                    transA == .none ? CblasNoTrans : CblasTrans,
                    transB == .none ? CblasNoTrans : CblasTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }

    /// The product of two packed row-major matrices: a (m×k) · b (k×n), scaled by `alpha`.
    public static func matmul(_ a: [Float], _ b: [Float], m: Int, k: Int, n: Int, alpha: Float = 1) -> [Float] {
        precondition(a.count == m * k && b.count == k * n, "matmul: operand sizes do not match m, k, n")
        var c = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    gemm(.none, .none, m: m, n: n, k: k, alpha: alpha, a: pa.baseAddress!, b: pb.baseAddress!, c: pc.baseAddress!)
                }
            }
        }
        return c
    }

    /// Calls LAPACK `sgesdd` (jobz = "S", the thin SVD) on a column-major `rows`×`columns` matrix
    /// held in `a` (overwritten). `s` receives min(rows, columns) singular values, descending;
    /// `u` (rows × k, column-major) and `vt` (k × columns, column-major) the singular vectors.
    /// Returns LAPACK's `info` (0 on success). The workspace is queried first, then allocated.
    static func lapackThinSVD(rows: Int, columns: Int, a: UnsafeMutablePointer<Float>,
                              s: UnsafeMutablePointer<Float>, u: UnsafeMutablePointer<Float>,
                              vt: UnsafeMutablePointer<Float>) -> Int {
        let k = min(rows, columns)
        var jobz = CChar(UInt8(ascii: "S"))
        var m = blasint(rows), n = blasint(columns)
        var lda = blasint(max(1, rows)), ldu = blasint(max(1, rows)), ldvt = blasint(max(1, k))
        var info: blasint = 0
        var iwork = [blasint](repeating: 0, count: max(1, 8 * k))
        // Workspace query: lwork = -1 asks for the optimal size in work[0].
        var query: Float = 0
        var lwork: blasint = -1
        sgesdd_(&jobz, &m, &n, a, &lda, s, u, &ldu, vt, &ldvt, &query, &lwork, &iwork, &info)
        guard info == 0 else { return Int(info) }
        // The size comes back as a float; round up so a large size is never one short.
        lwork = blasint(max(1, Int(query.nextUp.rounded(.up))))
        var work = [Float](repeating: 0, count: Int(lwork))
        sgesdd_(&jobz, &m, &n, a, &lda, s, u, &ldu, vt, &ldvt, &work, &lwork, &iwork, &info)
        return Int(info)
    }

    /// The number of threads OpenBLAS currently uses per call (process-wide in OpenBLAS).
    public static var threadCount: Int { Int(openblas_get_num_threads()) }

    /// Runs `body` with OpenBLAS limited to one thread per call, then restores the previous
    /// count. For callers that spread independent sgemm calls over their own threads (each call
    /// then runs on its caller's thread, which OpenBLAS supports concurrently).
    public static func singleThreaded<R>(_ body: () throws -> R) rethrows -> R {
        let previous = threadCount
        if previous != 1 { setThreadCount(1) }
        defer { if previous != 1 { setThreadCount(previous) } }
        return try body()
    }

    /// Sets the number of threads OpenBLAS uses from now on (process-wide in OpenBLAS).
    public static func setThreadCount(_ count: Int) {
        openblas_set_num_threads(Int32(max(1, count)))
    }
}
