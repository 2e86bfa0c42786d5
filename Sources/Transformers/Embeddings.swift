import Foundation
import TensorRuntime

/// Fixed (non-learned) embeddings shared by both families: the sinusoidal timestep features, the
/// FLUX rotary tables and the SD3 position-table crop.
enum Embeddings {
    /// diffusers' `get_timestep_embedding` with `flip_sin_to_cos = True`, `scale = 1`,
    /// `max_period = 10000`, computed in Float32 as torch does: for each value t, `[cos(t·fₖ),
    /// sin(t·fₖ)]` with fₖ = exp(−ln(10000)·k / (half − shift)), k < half. Result `[count, dim]`.
    static func timestepSinusoid(_ timesteps: [Float], dimension: Int = 256, downscaleFreqShift: Float = 0) -> Tensor {
        let half = dimension / 2
        let logPeriod = Float(-log(10000.0))
        let divisor = Float(half) - downscaleFreqShift
        let frequencies: [Float] = (0..<half).map { k in
            let exponent = logPeriod * Float(k)
            return Foundation.exp(exponent / divisor)
        }
        var values = [Float](repeating: 0, count: timesteps.count * dimension)
        for (row, t) in timesteps.enumerated() {
            let base = row * dimension
            for k in 0..<half {
                let angle = t * frequencies[k]
                values[base + k] = Foundation.cos(angle)
                values[base + half + k] = Foundation.sin(angle)
            }
        }
        return Tensor(shape: [timesteps.count, dimension], scalars: values)
    }

    /// FLUX's rotary tables for position ids `[tokens, axes]`: for each axis of `axesDims[i]`
    /// channels, frequencies θ^(−2k/dᵢ) (k < dᵢ/2) times the id, computed in Float64 as diffusers'
    /// `FluxPosEmbed` does, axes concatenated. Returns cos and sin, each `[tokens, Σdᵢ/2]`, one
    /// value per adjacent channel pair.
    static func ropeTables(ids: [Float], tokens: Int, axesDims: [Int], theta: Double = 10000) -> (cos: Tensor, sin: Tensor) {
        let axes = axesDims.count
        let pairs = axesDims.reduce(0, +) / 2
        let frequencies: [[Double]] = axesDims.map { d in
            stride(from: 0, to: d, by: 2).map { k in 1.0 / Foundation.pow(theta, Double(k) / Double(d)) }
        }
        var cosValues = [Float](repeating: 0, count: tokens * pairs)
        var sinValues = [Float](repeating: 0, count: tokens * pairs)
        for n in 0..<tokens {
            var column = n * pairs
            for axis in 0..<axes {
                let position = Double(ids[n * axes + axis])
                for f in frequencies[axis] {
                    let angle = position * f
                    cosValues[column] = Float(Foundation.cos(angle))
                    sinValues[column] = Float(Foundation.sin(angle))
                    column += 1
                }
            }
        }
        return (Tensor(shape: [tokens, pairs], scalars: cosValues), Tensor(shape: [tokens, pairs], scalars: sinValues))
    }

    /// The first rows of each SD3 crop: the stored table is a `side × side` grid of positions
    /// (row-major); a `height × width` patch grid takes the centred window starting at
    /// `((side − height) / 2, (side − width) / 2)`. Returns, per grid row, the table's row range.
    static func cropRanges(side: Int, height: Int, width: Int) -> [Range<Int>] {
        let top = (side - height) / 2
        let left = (side - width) / 2
        return (0..<height).map { r in
            let start = (top + r) * side + left
            return start..<(start + width)
        }
    }
}
