import Foundation
import GRPOGuard
import TensorRuntime
import TestSupport
import Testing

/// The built-in rewards' formulas and specs.
@Suite struct BuiltinRewardTests {
    /// Two samples of shape [2, 1, 2]: channel 0 then channel 1.
    let latents = Tensor(shape: [2, 2, 1, 2], scalars: [1, 3, -1, -3,
                                                         0, 2, 4, 6])
    let prompts = ["a", "b"]
    let ids = [0, 1]

    @Test func meanBrightness() throws {
        #expect(try MeanReward().score(latents: latents, prompts: prompts, promptIDs: ids) == [0, 3])
        #expect(try MeanReward(channel: 0).score(latents: latents, prompts: prompts, promptIDs: ids) == [2, 1])
        #expect(try MeanReward(channel: 1).score(latents: latents, prompts: prompts, promptIDs: ids) == [-2, 5])
        // Toward a target: −|mean − t|.
        #expect(try MeanReward(target: 1).score(latents: latents, prompts: prompts, promptIDs: ids) == [-1, -2])
    }

    @Test func contrast() throws {
        // Sample 0: values 1, 3, −1, −3 → mean 0, population variance (1+9+1+9)/4 = 5.
        let r = try ContrastReward().score(latents: latents, prompts: prompts, promptIDs: ids)
        #expect(abs(r[0] - 5.0.squareRoot().f) < 1e-6)
        // Sample 1: 0, 2, 4, 6 → mean 3, variance (9+1+1+9)/4 = 5.
        #expect(abs(r[1] - 5.0.squareRoot().f) < 1e-6)
        #expect(try ContrastReward(channel: 1).score(latents: latents, prompts: prompts, promptIDs: ids) == [1, 1])
        #expect(try ContrastReward(channel: 1, target: 3).score(latents: latents, prompts: prompts, promptIDs: ids) == [-2, -2])
    }

    @Test func targetLatent() throws {
        let reward = TargetLatentReward(seed: 7, scale: 0.5)
        let p = reward.pattern(sampleShape: [2, 1, 2])
        // One draw per channel by default, constant within the channel, deterministic.
        #expect(p.scalars[0] == p.scalars[1] && p.scalars[2] == p.scalars[3] && p.scalars[0] != p.scalars[2])
        #expect(p == TargetLatentReward(seed: 7, scale: 0.5).pattern(sampleShape: [2, 1, 2]))
        #expect(p != TargetLatentReward(seed: 8, scale: 0.5).pattern(sampleShape: [2, 1, 2]))
        // The pattern itself scores 0; a shifted copy scores −shift².
        var batch = Tensor(shape: [2, 2, 1, 2], scalars: p.scalars + p.scalars.map { $0 + 2 })
        #expect(try reward.score(latents: batch, prompts: prompts, promptIDs: ids) == [0, -4])
        // −MSE by hand against `latents`.
        let r = try reward.score(latents: latents, prompts: prompts, promptIDs: ids)
        for b in 0..<2 {
            let x = Array(latents.scalars[(4 * b)..<(4 * b + 4)])
            let mse = zip(x, p.scalars).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) / 4
            #expect(abs(Double(r[b]) + mse) < 1e-5)
        }
        let elementwise = TargetLatentReward(seed: 7, elementwise: true).pattern(sampleShape: [2, 1, 2])
        #expect(Set(elementwise.scalars).count == 4)
        batch.scalars[0] = .nan
        #expect(throws: RewardError.self) { try reward.score(latents: batch, prompts: prompts, promptIDs: ids) }
    }

    @Test func specsSelectRewards() throws {
        #expect(try BuiltinRewards.make(spec: "builtin:mean") as? MeanReward == MeanReward())
        #expect(try BuiltinRewards.make(spec: "builtin:mean:channel=0,target=0.5") as? MeanReward == MeanReward(channel: 0, target: 0.5))
        #expect(try BuiltinRewards.make(spec: "builtin:contrast:target=2") as? ContrastReward == ContrastReward(target: 2))
        #expect(try BuiltinRewards.make(spec: "builtin:target:seed=3,scale=0.25,elementwise=true") as? TargetLatentReward
                == TargetLatentReward(seed: 3, scale: 0.25, elementwise: true))
        #expect(try BuiltinRewards.make(spec: "builtin:mean:channel=0,target=0.5").name == "builtin:mean:channel=0,target=0.5")
        for (spec, words) in [("builtin:brightness", "no built-in reward called 'brightness' (known: mean, target, contrast)"),
                              ("mean", "builtin:NAME"),
                              ("builtin:mean:colour=1", "builtin:mean has no option 'colour'"),
                              ("builtin:mean:channel=-1", "option channel=-1 is not a valid value"),
                              ("builtin:mean:target=nan", "option target=nan is not a valid value"),
                              ("builtin:mean:channel", "option 'channel' is not key=value")] {
            let error = rewardFailure { () throws(RewardError) in _ = try BuiltinRewards.make(spec: spec) }
            #expect(error?.description.contains(words) == true, "\(spec): \(String(describing: error))")
        }
    }

    @Test func rejectsMalformedBatches() {
        let cases: [(Tensor, [String], String)] = [
            (Tensor(shape: [0, 4], scalars: []), [], "hold no samples"),
            (latents, ["a"], "2 samples but 1 prompts"),
        ]
        for (t, p, words) in cases {
            let error = rewardFailure { () throws(RewardError) in _ = try MeanReward().score(latents: t, prompts: p, promptIDs: p.indices.map { $0 }) }
            #expect(error?.description.contains(words) == true, "\(String(describing: error))")
        }
        let error = rewardFailure { () throws(RewardError) in _ = try MeanReward(channel: 5).score(latents: latents, prompts: prompts, promptIDs: ids) }
        #expect(error?.description == "reward builtin:mean:channel=5: invalid batch: channel 5 does not exist in latents of shape [2, 2, 1, 2]")
    }
}

/// The external reward process: round trips with the example scorer and every failure mode.
@Suite struct ExternalRewardTests {
    static let python = which("python3")
    let latents = Tensor(shape: [3, 2, 2, 2], scalars: (0..<24).map { Float($0) * 0.25 - 2 })
    let prompts = ["a red cube", "ein \"Würfel\"\n", "🙂"]
    let ids = [4, 0, 4]

    func config(_ command: String, _ arguments: [String] = [], timeout: Double = 20, onFailure: RewardFailurePolicy = .fail,
                transport: LatentTransport = .standard, temporary: String? = nil) -> ExternalRewardConfig {
        ExternalRewardConfig(command: command, arguments: arguments, timeout: timeout, onFailure: onFailure,
                             transport: transport, stderr: .capture, temporaryDirectory: temporary)
    }

    /// A shell scorer written to `dir`, run as `/bin/sh FILE`.
    func shellScorer(_ dir: TemporaryDirectory, _ body: String) throws -> ExternalRewardConfig {
        let path = dir.file("scorer.sh")
        try body.write(toFile: path, atomically: true, encoding: .utf8)
        return config("/bin/sh", [path])
    }

    /// The error the first batch gets from the shell scorer `body`.
    func firstBatchError(_ body: String, timeout: Double = 20, onFailure: RewardFailurePolicy = .fail) throws -> RewardError? {
        let dir = TemporaryDirectory()
        var c = try shellScorer(dir, body)
        c.timeout = timeout
        c.onFailure = onFailure
        let reward = try ExternalReward(config: c)
        return rewardFailure { () throws(RewardError) in _ = try reward.score(latents: latents, prompts: prompts, promptIDs: ids) }
    }

    @Test(.enabled(if: python != nil)) func roundTripsWithTheExampleScorer() throws {
        let script = Repository.path("tools/rewards/example_reward.py")
        let expected = try MeanReward().score(latents: latents, prompts: prompts, promptIDs: ids)
        let dir = TemporaryDirectory()
        for transport in [LatentTransport.base64, .file, .auto(maxInlineBytes: 16)] {
            let reward = try ExternalReward(config: config("python3", [script], transport: transport, temporary: dir.path))
            let pid = reward.processIdentifier
            for _ in 0..<3 {
                #expect(try reward.score(latents: latents, prompts: prompts, promptIDs: ids) == expected, "\(transport)")
            }
            #expect(reward.processIdentifier == pid, "the scorer is started once and reused")
            let second = Tensor(shape: [1, 4], scalars: [1, 2, 3, 5])
            #expect(try reward.score(latents: second, prompts: ["x"], promptIDs: [9]) == [2.75])
            reward.close()
            #expect(reward.processIdentifier == nil)
        }
        // Latents files are deleted after each reply and their folder when the reward closes.
        #expect(dir.listing() == [])
        let std = try ExternalReward(config: config("python3", [script, "--mode", "std"]))
        let contrast = try ContrastReward().score(latents: latents, prompts: prompts, promptIDs: ids)
        #expect(zip(try std.score(latents: latents, prompts: prompts, promptIDs: ids), contrast).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test(.enabled(if: python != nil)) func sendsPromptsShapeAndTransportExactly() throws {
        // The scorer echoes what it received as rewards: prompt length, prompt id, rank, transport.
        let dir = TemporaryDirectory()
        let path = dir.file("probe.py")
        try """
        import json, sys, os
        for line in sys.stdin:
            r = json.loads(line)
            file = "latents_path" in r and os.path.exists(r["latents_path"])
            rewards = [len(p) + 100 * i + 1000 * len(r["shape"]) + 10000 * file for p, i in zip(r["prompts"], r["prompt_ids"])]
            print(json.dumps({"id": r["id"], "rewards": rewards}), flush=True)
        """.write(toFile: path, atomically: true, encoding: .utf8)
        for (transport, file) in [(LatentTransport.base64, false), (.file, true)] {
            let reward = try ExternalReward(config: config("python3", [path], transport: transport, temporary: dir.path))
            let r = try reward.score(latents: latents, prompts: prompts, promptIDs: ids)
            let base: Float = 4000 + (file ? 10000 : 0)
            #expect(r == [base + 10 + 400, base + 13 + 0, base + 1 + 400])
        }
    }

    @Test func crashIsAnErrorWithStatusAndStderr() throws {
        let error = try firstBatchError("read line\necho 'model exploded: CUDA missing' >&2\nexit 3\n")
        #expect(error?.description.contains("/bin/sh") == true)
        #expect(error?.description.contains("exited with status 3 while scoring batch 0") == true, "\(String(describing: error))")
        #expect(error?.description.contains("model exploded: CUDA missing") == true)
    }

    @Test func signalIsNamed() throws {
        let error = try firstBatchError("read line\nkill -9 $$\n")
        #expect(error?.description.contains("was killed by signal 9 (SIGKILL) while scoring batch 0") == true, "\(String(describing: error))")
    }

    @Test func hangTimesOutAndKills() throws {
        let start = Date()
        let error = try firstBatchError("read line\necho 'thinking' >&2\nexec sleep 30\n", timeout: 0.5)
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(error?.description.contains("did not answer batch 0 within 0.5 s; it was killed") == true, "\(String(describing: error))")
        #expect(error?.description.contains("thinking") == true)
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/proc/self/stat")))
    func timeoutKillsTheScorersChildrenToo() throws {
        let dir = TemporaryDirectory()
        let pidFile = dir.file("child.pid")
        let error = try firstBatchError("read line\nsleep 30 &\necho $! > '\(pidFile)'\nwait\n", timeout: 0.5)
        #expect(error?.description.contains("did not answer batch 0 within 0.5 s") == true)
        let child = try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        // Gone, or a zombie waiting for a reaper: not running either way.
        var running = true
        for _ in 0..<100 where running {
            let stat = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8)) ?? ""
            running = !stat.isEmpty && !stat.contains(") Z ")
            if running { usleep(10_000) }
        }
        #expect(!running, "the scorer's child \(child) survived the kill")
    }

    @Test func closedOutputIsReported() throws {
        let error = try firstBatchError("read line\nexec 1>&-\nexec sleep 30\n")
        #expect(error?.description.contains("closed its standard output without answering batch 0") == true, "\(String(describing: error))")
    }

    @Test func badRepliesAreErrors() throws {
        let cases: [(reply: String, words: String)] = [
            ("this is not json", "invalid reply: not JSON"),
            ("[1, 2, 3]", "not a JSON object"),
            (#"{"id": 0, "rewards": [1.0, 2.0]}"#, "2 rewards for a batch of 3 samples"),
            (#"{"id": 5, "rewards": [1, 2, 3]}"#, "its id 5 does not match the request's id 0"),
            (#"{"rewards": [1, 2, 3]}"#, "no \"id\" member"),
            (#"{"id": 0, "rewards": [1, NaN, 3]}"#, "reward 1 is not finite (nan)"),
            (#"{"id": 0, "rewards": [1, 1e300, 3]}"#, "reward 1 (1e+300) does not fit in a float32"),
            (#"{"id": 0, "rewards": [1, "2", 3]}"#, "reward 1 is not a number (\"2\")"),
            (#"{"id": 0, "scores": [1, 2, 3]}"#, "no \"rewards\" array"),
            (#"{"id": 0, "error": "GPU out of memory"}"#, "reported an error for batch 0: GPU out of memory"),
        ]
        for (reply, words) in cases {
            let error = try firstBatchError("read line\ncat <<'EOF'\n\(reply)\nEOF\nread line\n")
            #expect(error?.description.contains(words) == true, "\(reply): \(String(describing: error))")
        }
    }

    @Test func missingCommandFailsAtStart() {
        let error = rewardFailure { () throws(RewardError) in _ = try ExternalReward(config: config("flowguard-no-such-scorer")) }
        #expect(error?.description == "reward command flowguard-no-such-scorer: could not start: flowguard-no-such-scorer was not found on PATH")
    }

    @Test func retryRecoversFromOneCrash() throws {
        let dir = TemporaryDirectory()
        let marker = dir.file("crashed-once")
        var c = try shellScorer(dir, """
            if [ ! -e '\(marker)' ]; then : > '\(marker)'; read line; exit 7; fi
            while read line; do echo '{"id": 0, "rewards": [1, 2, 3]}'; done
            """)
        c.onFailure = .retry(2)
        let reward = try ExternalReward(config: c)
        let first = reward.processIdentifier
        #expect(try reward.score(latents: latents, prompts: prompts, promptIDs: ids) == [1, 2, 3])
        #expect(reward.processIdentifier != first, "the crashed scorer was replaced")
    }

    @Test func retryExhaustionFailsCleanly() throws {
        let dir = TemporaryDirectory()
        let count = dir.file("starts")
        var c = try shellScorer(dir, "echo started >> '\(count)'\nread line\necho 'still broken' >&2\nexit 2\n")
        c.onFailure = .retry(2)
        let reward = try ExternalReward(config: c)
        let error = rewardFailure { () throws(RewardError) in _ = try reward.score(latents: latents, prompts: prompts, promptIDs: ids) }
        #expect(error?.description.hasPrefix("reward command /bin/sh \(dir.file("scorer.sh")) failed batch 0 3 times (restarting it each time); last failure: reward command") == true,
                "\(String(describing: error))")
        #expect(error?.description.contains("exited with status 2") == true && error?.description.contains("still broken") == true)
        #expect(try String(contentsOfFile: count, encoding: .utf8).split(separator: "\n").count == 3)
        // Under `fail` the next batch starts a fresh scorer (and fails again, with the next id).
        c.onFailure = .fail
        let single = try ExternalReward(config: c)
        _ = rewardFailure { () throws(RewardError) in _ = try single.score(latents: latents, prompts: prompts, promptIDs: ids) }
        let next = rewardFailure { () throws(RewardError) in _ = try single.score(latents: latents, prompts: prompts, promptIDs: ids) }
        #expect(next?.description.contains("while scoring batch 1") == true, "\(String(describing: next))")
    }

    @Test func policySpellings() {
        #expect(RewardFailurePolicy("fail") == .fail)
        #expect(RewardFailurePolicy("retry(3)") == .retry(3))
        #expect(RewardFailurePolicy("retry:2") == .retry(2))
        #expect(RewardFailurePolicy("retry(-1)") == nil && RewardFailurePolicy("again") == nil)
        #expect(ExternalRewardConfig(command: "python3", arguments: ["my reward.py", "--x"]).commandLine == "python3 'my reward.py' --x")
    }
}

/// The `RewardError` thrown by `body`, or nil.
private func rewardFailure(_ body: () throws(RewardError) -> Void) -> RewardError? {
    do { try body() } catch { return error }
    return nil
}

private extension Double {
    var f: Float { Float(self) }
}
