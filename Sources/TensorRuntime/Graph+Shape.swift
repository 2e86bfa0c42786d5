extension Graph {
    /// Concatenation along `axis`; all other dimensions must agree.
    public func concat(_ parts: [Variable], axis: Int) -> Variable {
        precondition(!parts.isEmpty, "concat: no parts")
        let first = parts[0].shape
        let axis = axis < 0 ? axis + first.count : axis
        precondition(axis >= 0 && axis < first.count, "concat: axis \(axis) out of range for \(first)")
        for part in parts {
            precondition(part.shape.count == first.count
                         && zip(part.shape, first).enumerated().allSatisfy { $0.offset == axis || $0.element.0 == $0.element.1 },
                         "concat: shapes \(parts.map(\.shape)) disagree off axis \(axis)")
        }
        let outer = first[..<axis].reduce(1, *), inner = first[(axis + 1)...].reduce(1, *)
        let sizes = parts.map { $0.shape[axis] }
        let total = sizes.reduce(0, +)
        var shape = first
        shape[axis] = total
        let y = Tensor.uninitialized(shape) { yp in
            var offset = 0
            for (part, size) in zip(parts, sizes) {
                part.value.withPointer { pp in
                    for o in 0..<outer {
                        (yp + (o * total + offset) * inner).update(from: pp + o * size * inner, count: size * inner)
                    }
                }
                offset += size
            }
        }
        let record = recordsGradients && parts.contains { $0.requiresGradient }
        return output(y, record: record) { [unowned self] g in
            var offset = 0
            g.withPointer { gp in
                for (part, size) in zip(parts, sizes) {
                    if part.requiresGradient {
                        let piece = Tensor.uninitialized(part.shape) { dp in
                            for o in 0..<outer {
                                (dp + o * size * inner).update(from: gp + (o * total + offset) * inner, count: size * inner)
                            }
                        }
                        self.accumulate(part, piece)
                    }
                    offset += size
                }
            }
        }
    }

    /// Splits along `axis` into pieces of the given sizes (which sum to the dimension).
    public func split(_ x: Variable, axis: Int, sizes: [Int]) -> [Variable] {
        let axis = axis < 0 ? axis + x.shape.count : axis
        precondition(axis >= 0 && axis < x.shape.count && sizes.reduce(0, +) == x.shape[axis],
                     "split: sizes \(sizes) do not divide axis \(axis) of \(x.shape)")
        let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
        let total = x.shape[axis]
        let record = needsRecord(x)
        var offset = 0
        var pieces: [Variable] = []
        for size in sizes {
            var shape = x.shape
            shape[axis] = size
            let start = offset
            let piece = Tensor.uninitialized(shape) { dp in
                x.value.withPointer { xp in
                    for o in 0..<outer {
                        (dp + o * size * inner).update(from: xp + (o * total + start) * inner, count: size * inner)
                    }
                }
            }
            pieces.append(output(piece, record: record) { [unowned self] g in
                // Scatter this piece's gradient into a zero gradient of x's shape.
                var full = Tensor(repeating: 0, shape: x.shape)
                full.withMutablePointer { fp in
                    g.withPointer { gp in
                        for o in 0..<outer {
                            (fp + (o * total + start) * inner).update(from: gp + o * size * inner, count: size * inner)
                        }
                    }
                }
                self.accumulate(x, full)
            })
            offset += size
        }
        return pieces
    }

    /// The same values with another shape of the same element count.
    public func reshape(_ x: Variable, _ shape: [Int]) -> Variable {
        precondition(shape.reduce(1, *) == x.value.count, "reshape: \(x.shape) cannot become \(shape)")
        return output(x.value.reshaped(shape), record: needsRecord(x)) { [unowned self] g in
            self.accumulate(x, g.reshaped(x.shape))
        }
    }

    /// Image to patch tokens: x `[B, C, H, W]` → `[B, (H/p)·(W/p), C·p·p]`, tokens row-major over
    /// the patch grid, features ordered (c, i, j) — the order of a flattened Conv2d kernel.
    public func patchify(_ x: Variable, patch p: Int) -> Variable {
        precondition(x.shape.count == 4 && p > 0 && x.shape[2] % p == 0 && x.shape[3] % p == 0,
                     "patchify: x of shape \(x.shape) is not [B, C, H, W] with H and W multiples of \(p)")
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let layout = PatchLayout(batch: b, channels: c, gridHeight: h / p, gridWidth: w / p, patch: p, channelsLast: false)
        let y = Tensor.uninitialized([b, layout.tokens, c * p * p]) { yp in
            x.value.withPointer { layout.toTokens(image: $0, tokens: yp) }
        }
        return output(y, record: needsRecord(x)) { [unowned self] g in
            let dx = Tensor.uninitialized(x.shape) { dp in g.withPointer { layout.toImage(tokens: $0, image: dp) } }
            self.accumulate(x, dx)
        }
    }

    /// Patch tokens to image: x `[B, h·w, p·p·C]` with features ordered (i, j, c) →
    /// `[B, C, h·p, w·p]` (diffusers' SD3 unpatchify).
    public func unpatchify(_ x: Variable, height h: Int, width w: Int, patch p: Int, channels c: Int) -> Variable {
        precondition(x.shape.count == 3 && x.shape[1] == h * w && x.shape[2] == p * p * c,
                     "unpatchify: x of shape \(x.shape) is not [B, \(h)·\(w), \(p)·\(p)·\(c)]")
        let b = x.shape[0]
        let layout = PatchLayout(batch: b, channels: c, gridHeight: h, gridWidth: w, patch: p, channelsLast: true)
        let y = Tensor.uninitialized([b, c, h * p, w * p]) { yp in
            x.value.withPointer { layout.toImage(tokens: $0, image: yp) }
        }
        return output(y, record: needsRecord(x)) { [unowned self] g in
            let dx = Tensor.uninitialized(x.shape) { dp in g.withPointer { layout.toTokens(image: $0, tokens: dp) } }
            self.accumulate(x, dx)
        }
    }
}

/// The index map between an image `[B, C, gh·p, gw·p]` and patch tokens `[B, gh·gw, C·p·p]`
/// whose features are ordered (c, i, j), or (i, j, c) when `channelsLast`. Both directions are
/// permutations, so each is the other's transpose (and backward pass).
struct PatchLayout {
    let batch, channels, gridHeight, gridWidth, patch: Int
    let channelsLast: Bool

    var tokens: Int { gridHeight * gridWidth }

    /// The feature index of (channel, i, j) inside a token.
    @inline(__always) func feature(_ ch: Int, _ i: Int, _ j: Int) -> Int {
        channelsLast ? (i * patch + j) * channels + ch : (ch * patch + i) * patch + j
    }

    /// Visits every (image index, token index) pair.
    @inline(__always) func forEach(_ body: (Int, Int) -> Void) {
        let height = gridHeight * patch, width = gridWidth * patch, features = channels * patch * patch
        for b in 0..<batch {
            for ch in 0..<channels {
                for gy in 0..<gridHeight {
                    for i in 0..<patch {
                        for gx in 0..<gridWidth {
                            for j in 0..<patch {
                                let image = ((b * channels + ch) * height + gy * patch + i) * width + gx * patch + j
                                let token = (b * tokens + gy * gridWidth + gx) * features + feature(ch, i, j)
                                body(image, token)
                            }
                        }
                    }
                }
            }
        }
    }

    func toTokens(image: UnsafePointer<Float>, tokens: UnsafeMutablePointer<Float>) {
        forEach { tokens[$1] = image[$0] }
    }

    func toImage(tokens: UnsafePointer<Float>, image: UnsafeMutablePointer<Float>) {
        forEach { image[$0] = tokens[$1] }
    }
}
