import FlowMatching
import SafeTensors
import SystemSupport
import Foundation
import TensorRuntime

// Built-in rewards: cheap, deterministic functions of the final latents, for tests and the demo
// (design §6). Each scores sample b from its values x = latents[b] (all of them, or with
// `channel: c` only the slice latents[b, c, ...] along dimension 1). Prompts are ignored.
//
// | spec                   | formula                                   | options                        |
// |------------------------|-------------------------------------------|--------------------------------|
// | `builtin:mean`         | R = mean(x), or −|mean(x) − t| with target t | `channel`, `target`          |
// | `builtin:target`       | R = −mean((x − P)²), P a seeded pattern   | `seed`, `scale`, `elementwise`, `channel` |
// | `builtin:contrast`     | R = std(x) (population), or −|std(x) − t|  | `channel`, `target`           |
//
// Options follow the name after a second colon, comma-separated: `builtin:mean:channel=0,target=0.5`.

/// The names of the built-in rewards, as a config spells them after `builtin:`.
public enum BuiltinRewardKind: String, Sendable, CaseIterable {
    /// `MeanReward`: the mean latent value ("brightness").
    case mean
    /// `TargetLatentReward`: closeness to a fixed, seeded latent pattern.
    case target
    /// `ContrastReward`: the spread (standard deviation) of the latent values.
    case contrast
}

/// Mean brightness: R = mean(x) over a sample's values (or one channel's), or, with a target t,
/// R = −|mean(x) − t|, which peaks when the sample's mean reaches t. Spec `builtin:mean`.
public struct MeanReward: Reward, Equatable {
    /// Only the slice `[b, channel, ...]` is scored when set (dimension 1 of the latents).
    public var channel: Int?
    /// The mean to approach; nil rewards the mean itself (brighter is better).
    public var target: Float?

    /// A mean-brightness reward over all values (or one channel), toward `target` if given.
    public init(channel: Int? = nil, target: Float? = nil) {
        self.channel = channel
        self.target = target
    }

    /// `builtin:mean` with its options.
    public var name: String { specName("mean", [("channel", channel.map(String.init)), ("target", target.map { "\($0)" })]) }

    /// R_b = mean(x_b), or −|mean(x_b) − target|.
    public func score(latents: Tensor, prompts: [String], promptIDs: [Int]) throws(RewardError) -> [Float] {
        let b = try checkBatch(latents: latents, prompts: prompts, promptIDs: promptIDs)
        let rewards = try (0..<b).map { (i) throws(RewardError) -> Float in
            let m = try sampleValues(latents, i, channel: channel, reward: name).mean
            return Float(target.map { -abs(m - Double($0)) } ?? m)
        }
        try checkFinite(rewards)
        return rewards
    }
}

/// Target latent: R = −mean((x − P)²), the negative mean squared distance to a fixed pattern P of
/// the sample's shape; 0 is a perfect match. P = scale · z with z standard-normal draws of
/// `GaussianGenerator(seed:)`: by default one draw per channel (dimension 1 of the latents; P is
/// constant within a channel, a "colour" a small model can learn quickly), with `elementwise` one
/// draw per value in row-major order. Spec `builtin:target`.
public struct TargetLatentReward: Reward, Equatable {
    /// The seed of the pattern.
    public var seed: UInt64
    /// The pattern's standard deviation.
    public var scale: Float
    /// One draw per value instead of one per channel.
    public var elementwise: Bool
    /// Only the slice `[b, channel, ...]` is scored when set (against the same slice of P).
    public var channel: Int?

    /// A target-latent reward with the pattern drawn from `seed`.
    public init(seed: UInt64 = 0, scale: Float = 1, elementwise: Bool = false, channel: Int? = nil) {
        self.seed = seed
        self.scale = scale
        self.elementwise = elementwise
        self.channel = channel
    }

    /// `builtin:target` with its options.
    public var name: String {
        specName("target", [("seed", String(seed)), ("scale", "\(scale)"), ("elementwise", elementwise ? "true" : nil),
                            ("channel", channel.map(String.init))])
    }

    /// The pattern P for samples of shape `sampleShape` (the latents' shape without B).
    public func pattern(sampleShape: [Int]) -> Tensor {
        var generator = GaussianGenerator(seed: seed)
        if elementwise || sampleShape.isEmpty {
            var t = generator.tensor(shape: sampleShape)
            for i in t.scalars.indices { t.scalars[i] *= scale }
            return t
        }
        let channels = sampleShape[0]
        let inner = sampleShape.dropFirst().reduce(1, *)
        var values = [Float](repeating: 0, count: channels * inner)
        for c in 0..<channels {
            let v = scale * Float(generator.next())
            for j in 0..<inner { values[c * inner + j] = v }
        }
        return Tensor(shape: sampleShape, scalars: values)
    }

    /// R_b = −mean((x_b − P)²).
    public func score(latents: Tensor, prompts: [String], promptIDs: [Int]) throws(RewardError) -> [Float] {
        let b = try checkBatch(latents: latents, prompts: prompts, promptIDs: promptIDs)
        let p = pattern(sampleShape: Array(latents.shape.dropFirst()))
        let patternBatch = Tensor(shape: [1] + p.shape, scalars: p.scalars)
        let target = try sampleValues(patternBatch, 0, channel: channel, reward: name).values
        let rewards = try (0..<b).map { (i) throws(RewardError) -> Float in
            let x = try sampleValues(latents, i, channel: channel, reward: name).values
            var sum = 0.0
            for (v, t) in zip(x, target) {
                let d = Double(v) - Double(t)
                sum += d * d
            }
            return Float(-sum / Double(x.count))
        }
        try checkFinite(rewards)
        return rewards
    }
}

/// Contrast: R = std(x), the population standard deviation of a sample's values (or one
/// channel's); with a target t, R = −|std(x) − t|. Spec `builtin:contrast`.
public struct ContrastReward: Reward, Equatable {
    /// Only the slice `[b, channel, ...]` is scored when set (dimension 1 of the latents).
    public var channel: Int?
    /// The standard deviation to approach; nil rewards the spread itself.
    public var target: Float?

    /// A contrast reward over all values (or one channel), toward `target` if given.
    public init(channel: Int? = nil, target: Float? = nil) {
        self.channel = channel
        self.target = target
    }

    /// `builtin:contrast` with its options.
    public var name: String { specName("contrast", [("channel", channel.map(String.init)), ("target", target.map { "\($0)" })]) }

    /// R_b = std(x_b), or −|std(x_b) − target|.
    public func score(latents: Tensor, prompts: [String], promptIDs: [Int]) throws(RewardError) -> [Float] {
        let b = try checkBatch(latents: latents, prompts: prompts, promptIDs: promptIDs)
        let rewards = try (0..<b).map { (i) throws(RewardError) -> Float in
            let s = try sampleValues(latents, i, channel: channel, reward: name)
            var sum = 0.0
            for v in s.values {
                let d = Double(v) - s.mean
                sum += d * d
            }
            let std = (sum / Double(s.values.count)).squareRoot()
            return Float(target.map { -abs(std - Double($0)) } ?? std)
        }
        try checkFinite(rewards)
        return rewards
    }
}

/// Builds built-in rewards from their config spelling.
public enum BuiltinRewards {
    /// The prefix of a built-in reward's spec.
    public static let prefix = "builtin:"

    /// The reward a spec such as `builtin:mean`, `builtin:mean:channel=0,target=0.5` or
    /// `builtin:target:seed=7,scale=0.5` selects. Unknown names, unknown options and unreadable
    /// values are `RewardError.invalidSpec`.
    public static func make(spec: String) throws(RewardError) -> any Reward {
        guard spec.hasPrefix(prefix) else {
            throw .invalidSpec(spec: spec, reason: "a built-in reward is written builtin:NAME (one of \(known))")
        }
        let rest = spec.dropFirst(prefix.count)
        let nameEnd = rest.firstIndex(of: ":") ?? rest.endIndex
        let name = String(rest[..<nameEnd])
        guard let kind = BuiltinRewardKind(rawValue: name) else {
            throw .invalidSpec(spec: spec, reason: "no built-in reward called '\(escapeForDisplay(name))' (known: \(known))")
        }
        var options = try parseOptions(nameEnd < rest.endIndex ? String(rest[rest.index(after: nameEnd)...]) : "", spec: spec)
        func take<T>(_ key: String, _ parse: (String) -> T?) throws(RewardError) -> T? {
            guard let text = options.removeValue(forKey: key) else { return nil }
            guard let value = parse(text) else {
                throw .invalidSpec(spec: spec, reason: "option \(key)=\(escapeForDisplay(text)) is not a valid value")
            }
            return value
        }
        let finiteFloat: (String) -> Float? = { Float($0).flatMap { $0.isFinite ? $0 : nil } }
        let channelIndex: (String) -> Int? = { Int($0).flatMap { $0 >= 0 ? $0 : nil } }
        let reward: any Reward
        switch kind {
        case .mean:
            reward = MeanReward(channel: try take("channel", channelIndex), target: try take("target", finiteFloat))
        case .contrast:
            reward = ContrastReward(channel: try take("channel", channelIndex), target: try take("target", finiteFloat))
        case .target:
            let flag: (String) -> Bool? = { ["true": true, "1": true, "false": false, "0": false][$0] }
            reward = TargetLatentReward(seed: try take("seed", { UInt64($0) }) ?? 0,
                                        scale: try take("scale", finiteFloat) ?? 1,
                                        elementwise: try take("elementwise", flag) ?? false,
                                        channel: try take("channel", channelIndex))
        }
        if let unknown = options.keys.sorted().first {
            throw .invalidSpec(spec: spec, reason: "builtin:\(kind.rawValue) has no option '\(escapeForDisplay(unknown))'")
        }
        return reward
    }

    private static var known: String { BuiltinRewardKind.allCases.map(\.rawValue).joined(separator: ", ") }

    /// `key=value,key=value` → dictionary; repeated or malformed entries are errors.
    private static func parseOptions(_ text: String, spec: String) throws(RewardError) -> [String: String] {
        var options: [String: String] = [:]
        for part in text.split(separator: ",", omittingEmptySubsequences: true) {
            let pieces = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pieces.count == 2, !pieces[0].isEmpty else {
                throw .invalidSpec(spec: spec, reason: "option '\(escapeForDisplay(String(part)))' is not key=value")
            }
            guard options[pieces[0]] == nil else {
                throw .invalidSpec(spec: spec, reason: "option '\(escapeForDisplay(pieces[0]))' is given twice")
            }
            options[pieces[0]] = pieces[1]
        }
        return options
    }
}

/// The values of sample `index` (or of its slice along dimension 1 at `channel`) and their mean.
private func sampleValues(_ latents: Tensor, _ index: Int, channel: Int?, reward: String) throws(RewardError) -> (values: ArraySlice<Float>, mean: Double) {
    let perSample = latents.shape.dropFirst().reduce(1, *)
    guard perSample > 0 else {
        throw .invalidBatch(reward: reward, reason: "latents of shape \(latents.shape) have no values per sample")
    }
    var start = index * perSample
    var count = perSample
    if let channel {
        guard latents.rank >= 2, channel < latents.shape[1] else {
            throw .invalidBatch(reward: reward, reason: "channel \(channel) does not exist in latents of shape \(latents.shape)")
        }
        count = perSample / latents.shape[1]
        start += channel * count
    }
    let values = latents.scalars[start..<(start + count)]
    var sum = 0.0
    for v in values { sum += Double(v) }
    return (values, sum / Double(count))
}

/// `builtin:NAME` followed by `:key=value,...` for the options that are set.
private func specName(_ name: String, _ options: [(String, String?)]) -> String {
    let set = options.compactMap { key, value in value.map { "\(key)=\($0)" } }
    return BuiltinRewards.prefix + name + (set.isEmpty ? "" : ":" + set.joined(separator: ","))
}
