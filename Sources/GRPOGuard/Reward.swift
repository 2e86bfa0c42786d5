import Foundation
import SafeTensors
import SystemSupport
import TensorRuntime

/// Scores finished samples: the trainer hands it a batch of final latents with their prompts and
/// gets one reward per sample (design §6, "Rewards"). Higher is better. A reward never returns a
/// made-up value on failure: it throws a `RewardError` naming what went wrong.
public protocol Reward: Sendable {
    /// The reward's name as a config selects it (`builtin:mean`, or the external command), for
    /// logs and error messages.
    var name: String { get }

    /// The rewards of `latents` ([B, ...], sample b is `latents[b]`), one finite value per sample,
    /// in batch order. `prompts[b]` is sample b's prompt text and `promptIDs[b]` its index in the
    /// prompt set; both arrays have B entries.
    func score(latents: Tensor, prompts: [String], promptIDs: [Int]) throws(RewardError) -> [Float]
}

extension Reward {
    /// Checks the shape of a batch before it is scored: a rank ≥ 1 tensor with at least one sample
    /// and one prompt and one prompt id per sample. Returns B.
    func checkBatch(latents: Tensor, prompts: [String], promptIDs: [Int]) throws(RewardError) -> Int {
        guard latents.rank >= 1, latents.shape[0] > 0 else {
            throw .invalidBatch(reward: name, reason: "latents of shape \(latents.shape) hold no samples (need [B, ...] with B ≥ 1)")
        }
        let b = latents.shape[0]
        guard prompts.count == b, promptIDs.count == b else {
            throw .invalidBatch(reward: name, reason: "\(b) samples but \(prompts.count) prompts and \(promptIDs.count) prompt ids")
        }
        return b
    }

    /// Throws `nonFiniteReward` for the first reward that is NaN or infinite.
    func checkFinite(_ rewards: [Float]) throws(RewardError) {
        if let i = rewards.firstIndex(where: { !$0.isFinite }) {
            throw .nonFiniteReward(reward: name, sample: i, value: rewards[i])
        }
    }
}

/// What a reward does when its external scorer fails: give up at once, or restart the scorer and
/// resend the same request up to `n` more times before giving up.
public enum RewardFailurePolicy: Sendable, Equatable, CustomStringConvertible {
    /// The first failure is thrown.
    case fail
    /// Up to `n` restarts (n + 1 attempts in all); then `RewardError.retriesExhausted`.
    case retry(Int)

    /// Parses `fail`, `retry(3)` or `retry:3`.
    public init?(_ text: String) {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t == "fail" { self = .fail; return }
        for (prefix, suffix) in [("retry(", ")"), ("retry:", "")] where t.hasPrefix(prefix) && t.hasSuffix(suffix) {
            let inner = t.dropFirst(prefix.count).dropLast(suffix.count)
            guard let n = Int(inner), n >= 0 else { return nil }
            self = .retry(n)
            return
        }
        return nil
    }

    /// `fail` or `retry(n)`.
    public var description: String {
        switch self {
        case .fail: return "fail"
        case let .retry(n): return "retry(\(n))"
        }
    }

    /// How many attempts a request gets in all.
    var attempts: Int {
        switch self {
        case .fail: return 1
        case let .retry(n): return n + 1
        }
    }
}

/// Everything that can go wrong computing rewards. The description is the sentence a user reads:
/// it names the reward (for an external reward, its command line) and what happened.
public indirect enum RewardError: Error, Sendable, CustomStringConvertible {
    /// A config names a reward that does not exist or gives it a bad option.
    case invalidSpec(spec: String, reason: String)
    /// The batch handed to the reward is malformed (the caller's mistake, never retried).
    case invalidBatch(reward: String, reason: String)
    /// A reward produced NaN or an infinite value for a sample.
    case nonFiniteReward(reward: String, sample: Int, value: Float)
    /// The external scorer could not be started.
    case launchFailed(command: String, reason: String)
    /// The external scorer exited (`status`) or was killed by a signal while a request was pending.
    case exited(command: String, batch: Int, status: Int32, signal: Bool, stderr: String)
    /// The external scorer closed its standard output but kept running.
    case closedOutput(command: String, batch: Int, stderr: String)
    /// No reply within the timeout; the scorer was killed.
    case timedOut(command: String, batch: Int, seconds: Double, stderr: String)
    /// The reply line is not a valid answer to the request (not JSON, wrong id, wrong count,
    /// non-numbers or non-finite values).
    case badReply(command: String, batch: Int, reason: String, line: String)
    /// The scorer answered with an explicit `"error"` member.
    case scorerReported(command: String, batch: Int, message: String)
    /// Sending the request or preparing its latents file failed.
    case io(command: String, batch: Int, operation: String, message: String)
    /// Every attempt the failure policy allowed failed; `last` is the final failure.
    case retriesExhausted(command: String, batch: Int, attempts: Int, last: RewardError)

    public var description: String {
        switch self {
        case let .invalidSpec(spec, reason):
            return "reward '\(escapeForDisplay(spec))': \(reason)"
        case let .invalidBatch(reward, reason):
            return "reward \(reward): invalid batch: \(reason)"
        case let .nonFiniteReward(reward, sample, value):
            return "reward \(reward): sample \(sample) got the non-finite reward \(value)"
        case let .launchFailed(command, reason):
            return "reward command \(command): could not start: \(reason)"
        case let .exited(command, batch, status, signal, stderr):
            let how = signal ? "was killed by signal \(status)\(signalName(status))" : "exited with status \(status)"
            return "reward command \(command) \(how) while scoring batch \(batch)" + stderrSuffix(stderr)
        case let .closedOutput(command, batch, stderr):
            return "reward command \(command) closed its standard output without answering batch \(batch)" + stderrSuffix(stderr)
        case let .timedOut(command, batch, seconds, stderr):
            return "reward command \(command) did not answer batch \(batch) within \(formatSeconds(seconds)) s; it was killed" + stderrSuffix(stderr)
        case let .badReply(command, batch, reason, line):
            return "reward command \(command) answered batch \(batch) with an invalid reply: \(reason); reply: \(excerpt(line))"
        case let .scorerReported(command, batch, message):
            return "reward command \(command) reported an error for batch \(batch): \(escapeForDisplay(message))"
        case let .io(command, batch, operation, message):
            return "reward command \(command): \(operation) for batch \(batch) failed: \(message)"
        case let .retriesExhausted(command, batch, attempts, last):
            return "reward command \(command) failed batch \(batch) \(attempts) times (restarting it each time); last failure: \(last.description)"
        }
    }

    /// Whether restarting the scorer could help: failures of the external process, not of the
    /// caller's batch or the config.
    var isScorerFailure: Bool {
        switch self {
        case .invalidSpec, .invalidBatch, .nonFiniteReward, .launchFailed, .retriesExhausted: return false
        case .exited, .closedOutput, .timedOut, .badReply, .scorerReported, .io: return true
        }
    }
}

/// " (SIGKILL)" for well-known signal numbers, else "".
private func signalName(_ n: Int32) -> String {
    let names: [Int32: String] = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS",
                                  8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM"]
    return names[n].map { " (\($0))" } ?? ""
}

/// "; its stderr ended with: …" when the scorer wrote anything to stderr.
private func stderrSuffix(_ stderr: String) -> String {
    let t = stderr.trimmingCharacters(in: .whitespacesAndNewlines)
    return t.isEmpty ? "" : "; its stderr ended with:\n" + t
}

/// At most 200 characters of a reply line, control characters escaped.
private func excerpt(_ line: String) -> String {
    let shown = line.count > 200 ? String(line.prefix(200)) + "… (\(line.utf8.count) bytes)" : line
    return shown.isEmpty ? "(empty line)" : escapeForDisplay(shown)
}

/// 0.5, 2, 300: seconds without trailing zeros.
private func formatSeconds(_ s: Double) -> String {
    s == s.rounded() && abs(s) < 1e9 ? String(Int(s)) : String(s)
}
