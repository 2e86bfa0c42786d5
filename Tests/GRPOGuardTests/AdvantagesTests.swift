import TestSupport
import Testing
import GRPOGuard

/// Group-relative advantages against the numpy reference (flow_grpo's statistics).
@Suite struct AdvantagesTests {
    @Test func matchesReference() throws {
        let reference = try ReferenceFile()
        var k = 0
        while reference.has("advantages.\(k).rewards") {
            let rewards = try reference.doubles("advantages.\(k).rewards")
            let groups = try reference.doubles("advantages.\(k).groups").map { Int($0) }
            let p = try reference.doubles("advantages.\(k).params")
            let options = AdvantageOptions(scale: p[0] == 1 ? .global : .perGroup, epsilon: p[1], clamp: p[2])
            let a = Advantages.compute(rewards: rewards, groups: groups, options: options)
            #expect(maxError(a, try reference.doubles("advantages.\(k).out")) <= 1e-9, "case \(k)")
            k += 1
        }
        #expect(k == 5)
    }

    @Test func usesTheBiasedStdAndClamps() {
        // Group [0, 2]: mean 1, biased std 1 → ±1/(1 + 1e-4); the unbiased std √2 would give ±0.707.
        let a = Advantages.compute(rewards: [0, 2], groupSize: 2)
        #expect(abs(a[1] - 1 / 1.0001) < 1e-12 && abs(a[0] + 1 / 1.0001) < 1e-12)
        // One outlier among 30 is √29 ≈ 5.39 standard deviations away: clamped to 5.
        let rewards = [Double](repeating: 0, count: 29) + [1]
        #expect(Advantages.compute(rewards: rewards, groupSize: 30).last == 5)
        #expect(Advantages.compute(rewards: rewards, groupSize: 30, options: AdvantageOptions(clamp: nil)).last! > 5.3)
        // A group whose rewards are all equal gets zero advantages.
        #expect(Advantages.compute(rewards: [3, 3, 3], groupSize: 3) == [0, 0, 0])
    }

    @Test func globalScaleKeepsGroupMeans() {
        let rewards: [Double] = [1, 2, 3, 10, 20, 30]
        let a = Advantages.compute(rewards: rewards, groupSize: 3, options: AdvantageOptions(scale: .global))
        #expect(abs(a[0] + a[2]) < 1e-12 && a[1] == 0 && a[4] == 0)
        #expect(a[5] > a[2] * 9)   // the same global std divides both groups
    }
}
