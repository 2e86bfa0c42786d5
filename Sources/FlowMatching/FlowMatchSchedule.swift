/// The shifted flow-matching noise schedule used by SD3 and FLUX rollouts: `steps + 1` noise
/// levels σ running from 1 (pure noise) down to 0 (data).
///
/// σ_i = shift·u_i / (1 + (shift − 1)·u_i) for u = linspace(1, 1/T, T), followed by σ_T = 0
/// (design §6). Values are computed in `Double`.
public struct FlowMatchSchedule: Sendable, Equatable {
    /// The number of denoising steps T.
    public let steps: Int
    /// The timestep shift (3 for SD3.5 at 1024², 1 for no shift).
    public let shift: Double
    /// The noise levels σ_0 … σ_T; `sigmas.count == steps + 1`, σ_0 = 1 and σ_T = 0.
    public let sigmas: [Double]

    /// The schedule of `steps` steps with the given `shift` (both must be positive).
    public init(steps: Int, shift: Double = 3) {
        precondition(steps > 0, "FlowMatchSchedule: steps must be positive, got \(steps)")
        precondition(shift > 0, "FlowMatchSchedule: shift must be positive, got \(shift)")
        self.steps = steps
        self.shift = shift
        var sigmas = [Double]()
        sigmas.reserveCapacity(steps + 1)
        let t = Double(steps)
        for i in 0..<steps {
            // linspace(1, 1/T, T): evenly spaced from 1 to 1/T inclusive.
            let u = i == 0 ? 1 : (i == steps - 1 ? 1 / t : 1 + Double(i) * (1 / t - 1) / Double(steps - 1))
            sigmas.append(shift * u / (1 + (shift - 1) * u))
        }
        sigmas.append(0)
        self.sigmas = sigmas
    }

    /// The model's timestep input at step `i` (SD3 convention: 1000·σ_i).
    public func timestep(at i: Int) -> Double { 1000 * sigmas[i] }

    /// The model's timestep inputs for steps 0 ..< T.
    public var timesteps: [Double] { (0..<steps).map(timestep(at:)) }

    /// The signed step size of step `i`: dt = σ_{i+1} − σ_i (negative).
    public func dt(at i: Int) -> Double { sigmas[i + 1] - sigmas[i] }

    /// The SDE step from σ_i to σ_{i+1} with noise level `noiseLevel` (σ = 1 uses σ_1 in the
    /// denominator of the standard deviation, as the schedule's first step requires).
    public func sdeStep(at i: Int, noiseLevel: Double = SDEStep.defaultNoiseLevel) -> SDEStep {
        SDEStep(sigma: sigmas[i], sigmaNext: sigmas[i + 1], noiseLevel: noiseLevel,
                sigmaAtOne: sigmas[Swift.min(1, steps)])
    }
}
