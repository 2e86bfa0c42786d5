import Testing
import LoRA
import TestSupport

@Suite struct LoRAModuleTests {
    @Test func deltaIsScaledProductOfUpAndDown() {
        let down = Matrix(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let up = Matrix(shape: [2, 2], values: [1, 0, 0, 2])
        let module = LoRAModule(name: "m", down: down, up: up, alpha: 4)
        #expect(module.scale(rsLoRA: false) == 2)
        #expect(abs(module.scale(rsLoRA: true) - 4 / Float(2).squareRoot()) < 1e-6)
        #expect(module.delta(rsLoRA: false).values == [2, 4, 6, 16, 20, 24])
        #expect(LoRAModule(name: "m", down: down, up: up, alpha: nil).scale(rsLoRA: false) == 1)
    }
}
