extension Graph {
    /// LayerNorm over the last dimension without affine parameters (biased variance).
    public func layerNorm(_ x: Variable, epsilon: Float) -> Variable {
        precondition(!x.shape.isEmpty, "layerNorm: x is a scalar")
        let features = x.shape[x.shape.count - 1]
        let rows = features == 0 ? 0 : x.value.count / features
        let threads = self.threads
        var inverse = [Float](repeating: 0, count: rows)
        let y = Tensor.uninitialized(x.shape) { yp in
            x.value.withPointer { xp in
                inverse.withUnsafeMutableBufferPointer { inv in
                    let ip = Unchecked(inv.baseAddress!)
                    Kernels.rowwise(rows: rows, columns: features, threads: threads) { row, _ in
                        let x = xp + row * features, y = yp + row * features
                        let mean = Kernels.rowSum(x, features) / Float(features)
                        let mv = Vec(repeating: mean)
                        var acc = Vec(repeating: 0)
                        Kernels.map(features) { i, n in
                            var d = Kernels.load(x + i, n) - mv
                            if n < Vec.scalarCount { for j in n..<Vec.scalarCount { d[j] = 0 } }
                            acc += d * d
                        }
                        let r = 1 / (Kernels.horizontalSum(acc) / Float(features) + epsilon).squareRoot()
                        ip.value[row] = r
                        let rv = Vec(repeating: r)
                        Kernels.map(features) { i, n in Kernels.store((Kernels.load(x + i, n) - mv) * rv, y + i, n) }
                    }
                }
            }
        }
        let record = needsRecord(x)
        let savedY: Tensor? = record ? y : nil
        return output(y, record: record) { [unowned self] g in
            // dx = r·(g − mean(g) − ŷ·mean(g·ŷ)), ŷ the output.
            let dx = Tensor.uninitialized(x.shape) { dp in
                g.withPointer { gp in
                    savedY!.withPointer { yp in
                        inverse.withUnsafeBufferPointer { inv in
                            let ip = Unchecked(inv.baseAddress!)
                            Kernels.rowwise(rows: rows, columns: features, threads: threads) { row, _ in
                                let g = gp + row * features, y = yp + row * features, d = dp + row * features
                                let meanG = Vec(repeating: Kernels.rowSum(g, features) / Float(features))
                                let meanGY = Vec(repeating: Kernels.rowDot(g, y, features) / Float(features))
                                let r = Vec(repeating: ip.value[row])
                                Kernels.map(features) { i, n in
                                    Kernels.store(r * (Kernels.load(g + i, n) - meanG - Kernels.load(y + i, n) * meanGY), d + i, n)
                                }
                            }
                        }
                    }
                }
            }
            self.accumulate(x, dx)
        }
    }

    /// RMSNorm over the last dimension: x / sqrt(mean(x²) + ε) · weight (weight frozen, optional).
    public func rmsNorm(_ x: Variable, weight: Tensor?, epsilon: Float) -> Variable {
        precondition(!x.shape.isEmpty, "rmsNorm: x is a scalar")
        let features = x.shape[x.shape.count - 1]
        if let weight {
            precondition(weight.count == features, "rmsNorm: weight \(weight.shape) for x \(x.shape)")
        }
        let rows = features == 0 ? 0 : x.value.count / features
        let threads = self.threads
        let w = weight ?? Tensor(repeating: 1, shape: [features])
        var inverse = [Float](repeating: 0, count: rows)
        let y = Tensor.uninitialized(x.shape) { yp in
            x.value.withPointer { xp in
                w.withPointer { wp in
                    inverse.withUnsafeMutableBufferPointer { inv in
                        let ip = Unchecked(inv.baseAddress!)
                        Kernels.rowwise(rows: rows, columns: features, threads: threads) { row, _ in
                            let x = xp + row * features, y = yp + row * features
                            let r = 1 / (Kernels.rowDot(x, x, features) / Float(features) + epsilon).squareRoot()
                            ip.value[row] = r
                            let rv = Vec(repeating: r)
                            Kernels.map(features) { i, n in
                                Kernels.store(Kernels.load(x + i, n) * rv * Kernels.load(wp + i, n), y + i, n)
                            }
                        }
                    }
                }
            }
        }
        let record = needsRecord(x)
        let savedX: Tensor? = record ? x.value : nil
        return output(y, record: record) { [unowned self] g in
            // With x̂ = x·r and h = g·w: dx = r·(h − x̂·mean(h·x̂)).
            let dx = Tensor.uninitialized(x.shape) { dp in
                g.withPointer { gp in
                    savedX!.withPointer { xp in
                        w.withPointer { wp in
                            inverse.withUnsafeBufferPointer { inv in
                                let ip = Unchecked(inv.baseAddress!)
                                Kernels.rowwise(rows: rows, columns: features, threads: threads) { row, _ in
                                    let g = gp + row * features, x = xp + row * features, d = dp + row * features
                                    let r = ip.value[row]
                                    var acc = Vec(repeating: 0)
                                    Kernels.map(features) { i, n in
                                        acc += Kernels.load(g + i, n) * Kernels.load(wp + i, n) * Kernels.load(x + i, n)
                                    }
                                    let c = Vec(repeating: Kernels.horizontalSum(acc) * r * r / Float(features))
                                    let rv = Vec(repeating: r)
                                    Kernels.map(features) { i, n in
                                        let h = Kernels.load(g + i, n) * Kernels.load(wp + i, n)
                                        Kernels.store(rv * (h - Kernels.load(x + i, n) * c), d + i, n)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            self.accumulate(x, dx)
        }
    }
}
