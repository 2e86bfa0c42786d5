/// A small seeded pseudo-random generator (SplitMix64) whose whole state is one integer, so a
/// run that draws from it can be checkpointed and replayed exactly. Used for weight
/// initialisation, orderings and benchmark data; not for noise (see FlowMatching's generator).
public struct SplitMix64: RandomNumberGenerator, Sendable, Equatable {
    /// The state: the number of draws times the golden-ratio increment, plus the seed.
    public var state: UInt64

    /// A generator starting at `state` (the seed).
    public init(state: UInt64) { self.state = state }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in [0, 1) with 53 random bits.
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// `count` values uniform in [−amplitude, amplitude), 24 random bits each.
    public mutating func values(_ count: Int, amplitude: Float) -> [Float] {
        (0..<count).map { _ in (Float(next() >> 40) / Float(1 << 24) * 2 - 1) * amplitude }
    }
}
