import TensorRuntime

/// The deterministic (probability-flow ODE) Euler step used for evaluation rollouts.
public enum ODEStep {
    /// x' = x + v·dt, computed in `Double` per element and rounded once to `Float`.
    /// `x` and `velocity` must have the same shape.
    public static func euler(x: Tensor, velocity: Tensor, dt: Double) -> Tensor {
        precondition(x.shape == velocity.shape, "ODEStep.euler: x \(x.shape) and velocity \(velocity.shape) differ")
        var out = [Float](repeating: 0, count: x.count)
        x.scalars.withUnsafeBufferPointer { xs in
            velocity.scalars.withUnsafeBufferPointer { vs in
                for i in 0..<out.count { out[i] = Float(Double(xs[i]) + Double(vs[i]) * dt) }
            }
        }
        return Tensor(shape: x.shape, scalars: out)
    }
}
