import TestSupport
import Testing
import FlowMatching
import TensorRuntime

/// The shifted flow-match schedule against the reference and its defining properties.
@Suite struct ScheduleTests {
    @Test func matchesReference() throws {
        let reference = try ReferenceFile()
        var k = 0
        while reference.has("schedule.\(k).params") {
            let p = try reference.doubles("schedule.\(k).params")
            let schedule = FlowMatchSchedule(steps: Int(p[0]), shift: p[1])
            let expected = try reference.doubles("schedule.\(k).sigmas")
            #expect(schedule.sigmas.count == expected.count)
            #expect(maxError(schedule.sigmas, expected) <= 1e-12, "schedule \(p)")
            k += 1
        }
        #expect(k == 5)
    }

    @Test func endsAtOneAndZeroAndDecreases() {
        let schedule = FlowMatchSchedule(steps: 10, shift: 3)
        #expect(schedule.sigmas.count == 11)
        #expect(schedule.sigmas.first == 1)
        #expect(schedule.sigmas.last == 0)
        #expect(zip(schedule.sigmas, schedule.sigmas.dropFirst()).allSatisfy { $0 > $1 })
        #expect((0..<10).allSatisfy { schedule.dt(at: $0) < 0 })
        // shift 3 at u = 1/10: 0.3/1.2.
        #expect(abs(schedule.sigmas[9] - 0.25) < 1e-15)
    }

    @Test func timestepsAreThousandTimesSigma() {
        let schedule = FlowMatchSchedule(steps: 4, shift: 3)
        #expect(schedule.timesteps.count == 4)
        #expect(schedule.timestep(at: 0) == 1000)
        for i in 0..<4 { #expect(abs(schedule.timesteps[i] - 1000 * schedule.sigmas[i]) < 1e-9) }
    }

    @Test func firstStepUsesSigmaOneInTheDenominator() {
        let schedule = FlowMatchSchedule(steps: 10, shift: 3)
        let step = schedule.sdeStep(at: 0)
        let sigma1 = schedule.sigmas[1]
        #expect(abs(step.standardDeviation - 0.7 * (1 / (1 - sigma1)).squareRoot()) < 1e-15)
        #expect(step.standardDeviation.isFinite)
    }
}
