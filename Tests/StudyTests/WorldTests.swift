import FlowMatching
import Foundation
import SafeTensors
import Testing
import TestSupport
@testable import flowguard_study

/// The study's toy world: its closed-form density against a dense computation, its geometry, its
/// metrics on its own data, and the base model's position table against diffusers' fixture.
@Suite struct WorldTests {
    /// A world small enough for dense linear algebra: D = 2·2·2 = 8, k = 2, 3 classes.
    var small: ToyWorld {
        var s = WorldSettings()
        s.channels = 2; s.side = 2; s.classes = 3; s.manifoldDimension = 2; s.noise = 0.3; s.seed = 5
        return ToyWorld(s)
    }

    /// log N(x; μ, Σ) with Σ = U·λ·Uᵀ + σ²I built densely and factored by Cholesky.
    func denseLogDensity(_ w: ToyWorld, _ x: [Float], _ c: Int) -> Double {
        let d = w.dimension
        var sigma = [[Double]](repeating: [Double](repeating: 0, count: d), count: d)
        for i in 0..<d {
            sigma[i][i] = w.settings.noise * w.settings.noise
            for axis in w.axes[c] { for j in 0..<d { sigma[i][j] += w.axisVariance * axis[i] * axis[j] } }
        }
        var l = [[Double]](repeating: [Double](repeating: 0, count: d), count: d)
        for i in 0..<d { for j in 0...i {
            var s = sigma[i][j]
            for k in 0..<j { s -= l[i][k] * l[j][k] }
            l[i][j] = i == j ? s.squareRoot() : s / l[j][j]
        } }
        var y = [Double](repeating: 0, count: d)   // L·y = x − μ
        for i in 0..<d {
            var s = Double(x[i]) - w.means[c][i]
            for k in 0..<i { s -= l[i][k] * y[k] }
            y[i] = s / l[i][i]
        }
        let logDet = 2 * (0..<d).reduce(0.0) { $0 + log(l[$1][$1]) }
        return -0.5 * (Double(d) * log(2 * Double.pi) + logDet + y.reduce(0) { $0 + $1 * $1 })
    }

    @Test func closedFormDensityEqualsTheDenseGaussian() {
        let w = small
        var noise = GaussianGenerator(seed: 1)
        for c in 0..<3 {
            let x = w.sample(label: (c + 1) % 3, count: 1, noise: &noise)
            for k in 0..<3 {
                let closed = w.logDensity(x[...], label: k), dense = denseLogDensity(w, x, k)
                #expect(abs(closed - dense) <= 1e-9 * max(1, abs(dense)), "class \(k): \(closed) vs \(dense)")
            }
        }
    }

    @Test func geometryIsAsDocumented() {
        let w = ToyWorld(WorldSettings())
        let q = w.axes[0][0]
        for c in 0..<w.settings.classes {
            #expect(w.axes[c][0] == q)                               // shared quality axis
            for (i, a) in w.axes[c].enumerated() {
                #expect(abs(dot(a, a) - 1) < 1e-9)
                for b in w.axes[c][(i + 1)...] { #expect(abs(dot(a, b)) < 1e-9) }
                #expect(abs(dot(a, w.hack)) < 1e-9)                  // h leaves every manifold
            }
            #expect(abs(dot(w.means[c], w.hack)) < 1e-6 && abs(dot(w.means[c], q)) < 1e-6)
            let rms = (dot(w.means[c], w.means[c]) / Double(w.dimension)).squareRoot()
            #expect(abs(rms - w.settings.meanRms) < 1e-9)
        }
        #expect(abs(dot(w.hack, w.hack) - 1) < 1e-9)
    }

    /// On the world's own data: excess NLL ≈ 0, off-manifold ≈ 1, diversity ≈ 1, the Bayes
    /// classifier right, quality ≈ 0, no hack, and the proxy reads the quality coordinate.
    @Test func metricsOfDataAreTheirReferenceValues() {
        let w = ToyWorld(WorldSettings())
        var noise = GaussianGenerator(seed: 7)
        var samples: [Float] = [], labels: [Int] = []
        for c in 0..<w.settings.classes {
            samples += w.sample(label: c, count: 150, noise: &noise)
            labels += [Int](repeating: c, count: 150)
        }
        let m = w.metrics(samples: samples, labels: labels)
        #expect(abs(m.excessNLL) < 0.02, "excess NLL \(m.excessNLL)")
        #expect(abs(m.offManifold - 1) < 0.01, "off-manifold \(m.offManifold)")
        #expect(abs(m.diversity - 1) < 0.1, "diversity \(m.diversity)")
        #expect(m.classAccuracy == 1)
        #expect(abs(m.quality) < 0.15 && abs(m.hack) < 0.01)
        // R = z_q + β·h·x/√λ; on data the second term is noise of size σ/√λ.
        let d = w.dimension
        for i in 0..<20 {
            let x = samples[(i * d)..<((i + 1) * d)]
            var r = [Double](repeating: 0, count: d)
            for (e, v) in x.enumerated() { r[e] = Double(v) - w.means[labels[i]][e] }
            let zq = dot(w.axes[0][0], r) / w.axisVariance.squareRoot()
            #expect(abs(w.proxy(x) - zq) < 0.05)
        }
        // Pushing samples along h raises the proxy and wrecks the likelihood, as designed.
        var hacked = samples
        for i in 0..<labels.count { for e in 0..<d { hacked[i * d + e] += Float(3 * w.axisVariance.squareRoot() * w.hack[e]) } }
        let h = w.metrics(samples: hacked, labels: labels)
        #expect(abs(h.proxy - m.proxy - 3 * w.settings.hackWeight) < 1e-3 && abs(h.hack - m.hack - 3) < 1e-3)
        #expect(h.offManifold > 10 && h.excessNLL > 100 && abs(h.quality - m.quality) < 1e-6)
    }

    /// Our sin-cos table equals the one diffusers stored in the tiny SD3.5 fixture (width 32,
    /// 16×16 grid, sample size 16 / patch 2).
    @Test func positionTableMatchesDiffusers() throws {
        let file = try SafeTensorsFile(path: Repository.path("fixtures/sd35_tiny/diffusers/diffusion_pytorch_model.safetensors"))
        let stored = try file.floats(of: "pos_embed.pos_embed")
        let ours = BaseModel.positionTable(width: 32, grid: 16, baseSize: 8)
        #expect(stored.count == ours.count)
        let worst = zip(stored, ours).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst < 1e-6, "max difference \(worst)")
    }
}
