import FlowMatching
import Foundation
import TensorRuntime

/// The settings of the toy world (all in `study.json` under "world").
struct WorldSettings: Codable, Equatable {
    /// Latent channels, height and width (SD3 latents are [16, h, w]).
    var channels = 16
    var side = 8
    /// Number of classes ("prompts").
    var classes = 4
    /// Dimension k of each class's data manifold (the first direction is the shared quality axis).
    var manifoldDimension = 4
    /// Per-element RMS of the class means.
    var meanRms = 0.8
    /// Per-element RMS contributed by one manifold coordinate of unit size (its L2 scale / √D).
    var axisRms = 0.6
    /// Standard deviation of the isotropic noise around the manifold (per element).
    var noise = 0.1
    /// Weight β of the hack direction in the proxy reward (1: as cheap per unit distance as quality).
    var hackWeight = 1.0
    /// Seed of the world's structure.
    var seed: UInt64 = 2025
}

/// A class-conditional latent distribution known in closed form. Class c draws
/// x = μ_c + Σ_j z_j·√λ·u_{c,j} + σ·ε with z, ε standard normal: a Gaussian whose covariance is
/// U_c·diag(λ)·U_cᵀ + σ²·I (a k-dimensional manifold thickened by σ). Every class's first axis is
/// the shared "quality" direction q. The proxy reward is the scorer R(x) = (q·x + β·h·x)/√λ: on
/// data it reads the quality coordinate z_q (h·x is only noise there), but h is a direction
/// orthogonal to every class's manifold and mean (a fine checkerboard), along which samples can
/// push R up by leaving the data manifold, the way aesthetic scorers reward exaggeration.
struct ToyWorld {
    let settings: WorldSettings
    /// Elements of one latent, D = channels·side².
    let dimension: Int
    /// Class means μ_c, each D values.
    let means: [[Double]]
    /// Orthonormal manifold axes per class: axes[c][0] is q, shared by all classes.
    let axes: [[[Double]]]
    /// The hack direction h (unit, orthogonal to every axis and mean).
    let hack: [Double]
    /// λ, the variance along each manifold axis (axisRms²·D).
    let axisVariance: Double

    init(_ settings: WorldSettings) {
        self.settings = settings
        let d = settings.channels * settings.side * settings.side
        dimension = d
        axisVariance = settings.axisRms * settings.axisRms * Double(d)
        var random = SplitMix64(state: settings.seed)
        let smooth = { (random: inout SplitMix64) -> [Double] in ToyWorld.smoothPattern(channels: settings.channels, side: settings.side, random: &random) }
        var means: [[Double]] = []
        for _ in 0..<settings.classes {
            let m = ToyWorld.normalized(smooth(&random))
            means.append(m.map { $0 * settings.meanRms * Double(d).squareRoot() })
        }
        var meanSpan: [[Double]] = []
        for m in means { meanSpan.append(ToyWorld.normalized(ToyWorld.orthogonalized(m, against: meanSpan))) }
        let quality = ToyWorld.normalized(ToyWorld.orthogonalized(smooth(&random), against: meanSpan))
        var axes: [[[Double]]] = []
        for _ in 0..<settings.classes {
            var basis = [quality]
            while basis.count < settings.manifoldDimension {
                basis.append(ToyWorld.normalized(ToyWorld.orthogonalized(smooth(&random), against: basis)))
            }
            axes.append(basis)
        }
        // h: a checkerboard in space with random signs per channel, made orthogonal to all
        // means and axes (Gram–Schmidt over an orthonormalized set of them).
        var checker = [Double](repeating: 0, count: d)
        for ch in 0..<settings.channels {
            let sign: Double = random.next() & 1 == 0 ? 1 : -1
            for y in 0..<settings.side { for x in 0..<settings.side {
                checker[(ch * settings.side + y) * settings.side + x] = sign * ((x + y) % 2 == 0 ? 1 : -1)
            } }
        }
        var span: [[Double]] = []
        for v in means + axes.flatMap({ $0 }) {
            let r = ToyWorld.orthogonalized(v, against: span)
            if ToyWorld.norm(r) > 1e-9 { span.append(ToyWorld.normalized(r)) }
        }
        hack = ToyWorld.normalized(ToyWorld.orthogonalized(checker, against: span))
        self.means = means
        self.axes = axes
    }

    // MARK: sampling

    /// `count` data latents of class `label` ([count, C, H, W] flattened), drawn from `noise`.
    func sample(label: Int, count: Int, noise: inout GaussianGenerator) -> [Float] {
        var out = [Float](repeating: 0, count: count * dimension)
        let scale = axisVariance.squareRoot()
        for n in 0..<count {
            var x = means[label]
            for axis in axes[label] {
                let z = noise.next() * scale
                for e in 0..<dimension { x[e] += z * axis[e] }
            }
            for e in 0..<dimension { out[n * dimension + e] = Float(x[e] + settings.noise * noise.next()) }
        }
        return out
    }

    // MARK: the proxy reward

    /// R(x) = (q·x + β·h·x)/√λ.
    func proxy(_ x: ArraySlice<Float>) -> Double {
        (dot(axes[0][0], x) + settings.hackWeight * dot(hack, x)) / axisVariance.squareRoot()
    }

    // MARK: the truth

    /// log p(x | class c) of the world's Gaussian, exactly (Woodbury form, orthonormal axes).
    func logDensity(_ x: ArraySlice<Float>, label c: Int) -> Double {
        let s2 = settings.noise * settings.noise
        let k = Double(settings.manifoldDimension)
        var r = [Double](repeating: 0, count: dimension)
        var rr = 0.0
        for (e, v) in x.enumerated() { r[e] = Double(v) - means[c][e]; rr += r[e] * r[e] }
        var quadratic = rr / s2
        for axis in axes[c] {
            let p = dot(axis, r)
            quadratic -= p * p * (1 / s2 - 1 / (axisVariance + s2))
        }
        let logDet = (Double(dimension) - k) * log(s2) + k * log(axisVariance + s2)
        return -0.5 * (Double(dimension) * log(2 * Double.pi) + logDet + quadratic)
    }

    /// E[−log p(x | c)]/D over the class's own data (the same for every class).
    var dataNLLPerElement: Double {
        let s2 = settings.noise * settings.noise
        let k = Double(settings.manifoldDimension)
        let logDet = (Double(dimension) - k) * log(s2) + k * log(axisVariance + s2)
        return 0.5 * (log(2 * Double.pi) + (logDet + Double(dimension)) / Double(dimension))
    }

    /// What the study measures on a set of samples (never seen by the optimizer except `proxy`).
    struct Metrics: Codable, Equatable {
        /// Mean proxy reward R.
        var proxy: Double
        /// Mean quality coordinate z_q = q·(x − μ_c)/√λ, clamped to ±3 per sample (beyond 3σ
        /// of the data is exaggeration, not quality).
        var quality: Double
        /// Mean h·x/√λ: the part of R that comes from leaving the manifold.
        var hack: Double
        /// Mean excess negative log-likelihood per element under the true class density
        /// (0 for data; higher is worse).
        var excessNLL: Double
        /// RMS of the off-manifold residual relative to the data's σ (1 for data).
        var offManifold: Double
        /// Fraction of samples the true Bayes classifier assigns to their prompt's class.
        var classAccuracy: Double
        /// Mean over classes and class-specific axes of the samples' std of z_j (1 for data;
        /// 0 when a class collapses to one point).
        var diversity: Double
    }

    /// The metrics of `samples` ([n·D] values) whose prompts are `labels`.
    func metrics(samples: [Float], labels: [Int]) -> Metrics {
        let n = labels.count
        precondition(samples.count == n * dimension)
        let root = axisVariance.squareRoot()
        var proxy = 0.0, quality = 0.0, hackSum = 0.0, nll = 0.0, off = 0.0, correct = 0
        var coordinates = [[[Double]]](repeating: [], count: settings.classes)   // per class: per sample z_1..k-1
        for i in 0..<n {
            let x = samples[(i * dimension)..<((i + 1) * dimension)]
            let c = labels[i]
            proxy += self.proxy(x)
            var r = [Double](repeating: 0, count: dimension)
            for (e, v) in x.enumerated() { r[e] = Double(v) - means[c][e] }
            let z = axes[c].map { dot($0, r) / root }
            quality += min(3, max(-3, z[0]))
            hackSum += dot(hack, x) / root
            var residual = r
            for (j, axis) in axes[c].enumerated() {
                let p = z[j] * root
                for e in 0..<dimension { residual[e] -= p * axis[e] }
            }
            off += residual.reduce(0) { $0 + $1 * $1 }
            let scores = (0..<settings.classes).map { logDensity(x, label: $0) }
            nll += -scores[c] / Double(dimension) - dataNLLPerElement
            if scores.indices.max(by: { scores[$0] < scores[$1] }) == c { correct += 1 }
            coordinates[c].append(Array(z.dropFirst()))
        }
        var spread = 0.0, spreadCount = 0
        for rows in coordinates where rows.count >= 2 {
            for j in 0..<(settings.manifoldDimension - 1) {
                let values = rows.map { $0[j] }
                let mean = values.reduce(0, +) / Double(values.count)
                let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count - 1)
                spread += variance.squareRoot()
                spreadCount += 1
            }
        }
        let k = settings.manifoldDimension
        let offRMS = (off / Double(n) / Double(dimension - k)).squareRoot() / settings.noise
        return Metrics(proxy: proxy / Double(n), quality: quality / Double(n), hack: hackSum / Double(n),
                       excessNLL: nll / Double(n), offManifold: offRMS, classAccuracy: Double(correct) / Double(n),
                       diversity: spreadCount > 0 ? spread / Double(spreadCount) : 0)
    }

    // MARK: vectors

    /// A random smooth pattern: per channel, a sum of 2-D cosines of spatial frequencies 0…2
    /// with normal amplitudes and uniform phases.
    static func smoothPattern(channels: Int, side: Int, random: inout SplitMix64) -> [Double] {
        var v = [Double](repeating: 0, count: channels * side * side)
        for ch in 0..<channels {
            for fy in 0...2 { for fx in 0...2 {
                let u1 = max(random.uniform(), 1e-300), u2 = random.uniform()
                let amplitude = (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
                let py = 2 * Double.pi * random.uniform(), px = 2 * Double.pi * random.uniform()
                for y in 0..<side { for x in 0..<side {
                    let a = Double.pi * Double(fy) * (Double(y) + 0.5) / Double(side) + py
                    let b = Double.pi * Double(fx) * (Double(x) + 0.5) / Double(side) + px
                    v[(ch * side + y) * side + x] += amplitude * cos(a) * cos(b)
                } }
            } }
        }
        return v
    }

    static func norm(_ v: [Double]) -> Double { v.reduce(0) { $0 + $1 * $1 }.squareRoot() }
    static func normalized(_ v: [Double]) -> [Double] { let n = norm(v); return v.map { $0 / n } }
    /// `v` minus its projections on the orthonormal `basis` (twice, for numerical orthogonality).
    static func orthogonalized(_ v: [Double], against basis: [[Double]]) -> [Double] {
        var r = v
        for _ in 0..<2 {
            for b in basis {
                let p = zip(r, b).reduce(0) { $0 + $1.0 * $1.1 }
                for e in r.indices { r[e] -= p * b[e] }
            }
        }
        return r
    }
}

func dot(_ a: [Double], _ b: ArraySlice<Float>) -> Double {
    var s = 0.0
    for (i, v) in b.enumerated() { s += a[i] * Double(v) }
    return s
}

func dot(_ a: [Double], _ b: [Double]) -> Double {
    var s = 0.0
    for i in a.indices { s += a[i] * b[i] }
    return s
}
