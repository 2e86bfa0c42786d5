import TestSupport
import Testing
import GRPOGuard
import TensorRuntime

/// AdamW with gradient clipping against torch, state export/resume, and the EMA.
@Suite struct OptimizerTests {
    struct Trajectory {
        var configuration: AdamWConfiguration
        var maxNorm: Double
        var initial: [Tensor]
        var gradients: [[Tensor]]
        var after: [[[Double]]]
        var norms: [Double]
    }

    func trajectories() throws -> [Trajectory] {
        let reference = try ReferenceFile()
        var result: [Trajectory] = []
        var k = 0
        while reference.has("adamw.\(k).config") {
            let c = try reference.doubles("adamw.\(k).config")
            let steps = Int(c[6]), count = Int(c[7])
            result.append(Trajectory(
                configuration: AdamWConfiguration(learningRate: c[0], beta1: c[1], beta2: c[2], epsilon: c[3], weightDecay: c[4]),
                maxNorm: c[5],
                initial: try (0..<count).map { try reference.tensor("adamw.\(k).init.\($0)") },
                gradients: try (0..<steps).map { t in try (0..<count).map { try reference.tensor("adamw.\(k).grad.\(t).\($0)") } },
                after: try (0..<steps).map { t in try (0..<count).map { try reference.doubles("adamw.\(k).after.\(t).\($0)") } },
                norms: try reference.doubles("adamw.\(k).norms")))
            k += 1
        }
        #expect(k == 2)
        return result
    }

    @Test func matchesTorchTrajectoryWithClipping() throws {
        for (k, case_) in try trajectories().enumerated() {
            var parameters = case_.initial
            var optimizer = AdamW(configuration: case_.configuration, counts: parameters.map(\.count))
            var clipped = 0
            for t in case_.gradients.indices {
                var gradients: [Tensor?] = case_.gradients[t]
                let norm = GradientClipping.clip(&gradients, maxNorm: case_.maxNorm)
                #expect(isClose(norm, case_.norms[t]), "case \(k) step \(t) norm")
                if norm > case_.maxNorm {
                    clipped += 1
                    #expect(abs(GradientClipping.globalNorm(gradients) - case_.maxNorm) < 1e-5)
                } else {
                    #expect(gradients.map { $0! } == case_.gradients[t])   // untouched below the limit
                }
                optimizer.step(parameters: &parameters, gradients: gradients)
                for i in parameters.indices {
                    #expect(maxError(parameters[i].scalars.map(Double.init), case_.after[t][i]) <= 1e-6, "case \(k) step \(t) parameter \(i)")
                }
            }
            #expect(clipped > 0 && clipped < case_.gradients.count, "case \(k): clipping should fire on some steps only")
            #expect(optimizer.state.steps.allSatisfy { $0 == case_.gradients.count })
        }
    }

    @Test func resumingFromExportedStateIsExact() throws {
        let case_ = try trajectories()[0]
        var continuous = case_.initial
        var optimizer = AdamW(configuration: case_.configuration, counts: continuous.map(\.count))
        var resumed: [Tensor] = []
        var saved: AdamWState?
        for t in case_.gradients.indices {
            optimizer.step(parameters: &continuous, gradients: case_.gradients[t])
            if t == 2 { saved = optimizer.state; resumed = continuous }
        }
        let state = try #require(saved)
        let copy = AdamWState(steps: state.steps, firstMoments: state.firstMoments, secondMoments: state.secondMoments)
        var second = AdamW(configuration: case_.configuration, state: copy)
        for t in 3..<case_.gradients.count { second.step(parameters: &resumed, gradients: case_.gradients[t]) }
        #expect(resumed == continuous)
        #expect(second.state == optimizer.state)
    }

    @Test func variablesAreUpdatedAndSkippedWithoutGradient() {
        let a = Variable(parameter: Tensor(shape: [2], scalars: [1, -1]))
        let b = Variable(parameter: Tensor(shape: [1], scalars: [0.5]))
        a.gradient = Tensor(shape: [2], scalars: [3, 4])
        var optimizer = AdamW(configuration: AdamWConfiguration(learningRate: 0.1, weightDecay: 0), counts: [2, 1])
        #expect(GradientClipping.clip([a, b], maxNorm: 1) == 5)
        #expect(abs(Double(a.gradient!.scalars[0]) - 0.6) < 1e-6)
        optimizer.step([a, b])
        // First Adam step moves each coordinate by lr against the gradient's sign.
        #expect(abs(Double(a.value.scalars[0]) - 0.9) < 1e-6 && abs(Double(a.value.scalars[1]) + 1.1) < 1e-6)
        #expect(b.value.scalars == [0.5] && optimizer.state.steps == [1, 0])
    }

    @Test func emaMatchesFlowGRPORule() throws {
        let reference = try ReferenceFile()
        let params = try reference.tensor("ema.params")
        let config = try reference.doubles("ema.config")
        let expected = try reference.doubles("ema.after")
        let width = params.shape[1]
        let row = { (k: Int) in Tensor(shape: [width], scalars: Array(params.scalars[k * width..<(k + 1) * width])) }
        var ema = ParameterEMA(parameters: [row(0)], decay: config[0], updateInterval: Int(config[1]))
        var updates = 0
        for k in 0..<params.shape[0] {
            if ema.update(parameters: [row(k)], optimizationStep: k) { updates += 1 }
            #expect(maxError(ema.averages[0].scalars.map(Double.init), Array(expected[k * width..<(k + 1) * width])) <= 1e-6, "step \(k)")
        }
        #expect(updates == 3)   // steps 7, 15, 23
        #expect(abs(ema.effectiveDecay(atStep: 7) - 8.0 / 17.0) < 1e-15)
        #expect(ema.effectiveDecay(atStep: 1000) == 0.9)
    }
}
