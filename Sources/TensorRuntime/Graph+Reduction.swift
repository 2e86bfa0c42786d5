extension Graph {
    /// Σ x (a 0-d result).
    public func sum(_ x: Variable) -> Variable {
        let total = x.value.withPointer { Kernels.sum($0, nil, count: x.value.count) }
        return output(Tensor(scalar: Float(total)), record: needsRecord(x)) { [unowned self] g in
            self.accumulate(x, Tensor(repeating: g.scalars[0], shape: x.shape))
        }
    }

    /// Σ x·weights for a frozen `weights` of x's shape (a 0-d result).
    public func weightedSum(_ x: Variable, weights: Tensor) -> Variable {
        precondition(weights.count == x.value.count, "weightedSum: weights \(weights.shape) for x \(x.shape)")
        let total = x.value.withPointer { xp in weights.withPointer { Kernels.sum(xp, $0, count: weights.count) } }
        return output(Tensor(scalar: Float(total)), record: needsRecord(x)) { [unowned self] g in
            self.accumulate(x, self.scaled(weights, by: g.scalars[0]).reshaped(x.shape))
        }
    }

    /// mean(x) (a 0-d result).
    public func mean(_ x: Variable) -> Variable {
        let n = x.value.count
        let total = x.value.withPointer { Kernels.sum($0, nil, count: n) }
        return output(Tensor(scalar: Float(total / Double(max(1, n)))), record: needsRecord(x)) { [unowned self] g in
            self.accumulate(x, Tensor(repeating: g.scalars[0] / Float(max(1, n)), shape: x.shape))
        }
    }
}

extension Kernels {
    /// Σ a[i]·(b[i] or 1), accumulated in Double (blocks of 256 summed in Float first).
    static func sum(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>?, count: Int) -> Double {
        var total = 0.0
        var start = 0
        while start < count {
            let end = min(count, start + 256)
            var partial: Float = 0
            if let b { for i in start..<end { partial += a[i] * b[i] } } else { for i in start..<end { partial += a[i] } }
            total += Double(partial)
            start = end
        }
        return total
    }
}
