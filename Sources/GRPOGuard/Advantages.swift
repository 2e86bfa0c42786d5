/// How the reward spread that scales advantages is measured.
public enum AdvantageScale: String, Sendable, Equatable, CaseIterable {
    /// Each prompt group's own standard deviation (flow_grpo `PerPromptStatTracker`, default).
    case perGroup
    /// One standard deviation over every reward of the batch, with per-group means
    /// (flow_grpo `PerPromptStatTracker(global_std=True)`; the official SD3 configs set it).
    case global
}

/// Group-relative advantages: A = (R − mean_group)/(std + ε), clamped to ±`clamp` (design §6).
///
/// Facts from flow_grpo (`flow_grpo/stat_tracking.py`, `scripts/train_sd3.py`): the group mean
/// and the standard deviation are numpy's `np.mean`/`np.std`, i.e. the *biased* (population)
/// standard deviation; the global option takes `np.std` over all rewards of the gathered batch
/// while keeping each group's own mean; ε = 1e-4 is added to the standard deviation; the training
/// loop clamps advantages to ±`adv_clip_max` = 5.
public struct AdvantageOptions: Sendable, Equatable {
    /// Which standard deviation divides the centred rewards.
    public var scale: AdvantageScale
    /// Added to the standard deviation (1e-4).
    public var epsilon: Double
    /// Advantages are clamped to [−clamp, clamp] (5); nil leaves them unclamped.
    public var clamp: Double?

    /// Options with the flow_grpo defaults unless given.
    public init(scale: AdvantageScale = .perGroup, epsilon: Double = 1e-4, clamp: Double? = 5) {
        self.scale = scale
        self.epsilon = epsilon
        self.clamp = clamp
    }
}

/// Computes advantages from rewards grouped by prompt.
public enum Advantages {
    /// Advantages for `rewards`, where `groups[i]` names the prompt group of sample i (any
    /// labels; samples of a group need not be adjacent). The two arrays have the same length.
    public static func compute<Group: Hashable>(rewards: [Double], groups: [Group],
                                                options: AdvantageOptions = AdvantageOptions()) -> [Double] {
        precondition(rewards.count == groups.count,
                     "Advantages: \(rewards.count) rewards but \(groups.count) group labels")
        var members: [Group: [Int]] = [:]
        for (i, g) in groups.enumerated() { members[g, default: []].append(i) }
        let globalStd = populationStd(rewards)
        var advantages = [Double](repeating: 0, count: rewards.count)
        for indices in members.values {
            let values = indices.map { rewards[$0] }
            let mean = values.reduce(0, +) / Double(values.count)
            let std = options.scale == .global ? globalStd : populationStd(values)
            for i in indices {
                var a = (rewards[i] - mean) / (std + options.epsilon)
                if let c = options.clamp { a = min(max(a, -c), c) }
                advantages[i] = a
            }
        }
        return advantages
    }

    /// Advantages for a batch laid out as consecutive groups of `groupSize` samples
    /// (`rewards.count` must be a multiple of `groupSize`).
    public static func compute(rewards: [Double], groupSize: Int,
                               options: AdvantageOptions = AdvantageOptions()) -> [Double] {
        precondition(groupSize > 0 && rewards.count % groupSize == 0,
                     "Advantages: \(rewards.count) rewards do not split into groups of \(groupSize)")
        return compute(rewards: rewards, groups: rewards.indices.map { $0 / groupSize }, options: options)
    }

    /// The biased standard deviation √(mean((x − mean)²)) (numpy's `np.std`); 0 for no values.
    static func populationStd(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let mean = values.reduce(0, +) / Double(values.count)
        let sq = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        return (sq / Double(values.count)).squareRoot()
    }
}
