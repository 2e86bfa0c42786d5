import SafeTensors

/// The role of a tensor in an adapter.
enum FactorRole: Hashable {
    case down, up, alpha, upBias, magnitude, magnitudeVector
    case lokrW1, lokrW1a, lokrW1b, lokrW2, lokrW2a, lokrW2b, lokrT2
    case hadaW1a, hadaW1b, hadaW2a, hadaW2b, hadaT1, hadaT2
    case diff, diffBias
    /// A whole tensor that replaces the base's (BFL Control norm scales).
    case replacement
}

/// Key suffixes every dialect shares after its module name. Which down/up spelling a dialect
/// uses is the dialect's business (`lowRankSuffixes`).
enum KeySuffixes {
    /// LyCORIS, DoRA and ComfyUI suffixes, the same under every prefix.
    static let shared: [(String, FactorRole)] = [
        (".alpha", .alpha), (".dora_scale", .magnitude),
        (".lora_magnitude_vector.weight", .magnitudeVector), (".lora_magnitude_vector", .magnitudeVector),
        (".lokr_w1_a", .lokrW1a), (".lokr_w1_b", .lokrW1b), (".lokr_w1", .lokrW1),
        (".lokr_w2_a", .lokrW2a), (".lokr_w2_b", .lokrW2b), (".lokr_w2", .lokrW2), (".lokr_t2", .lokrT2),
        (".hada_w1_a", .hadaW1a), (".hada_w1_b", .hadaW1b), (".hada_w2_a", .hadaW2a), (".hada_w2_b", .hadaW2b),
        (".hada_t1", .hadaT1), (".hada_t2", .hadaT2),
        (".diff_b", .diffBias), (".diff", .diff),
    ]
    /// kohya / ComfyUI / OneTrainer / LyCORIS LoCon.
    static let downUp: [(String, FactorRole)] = [(".lora_down.weight", .down), (".lora_up.weight", .up)]
    /// PEFT / diffusers / BFL / fal.
    static let aB: [(String, FactorRole)] = [(".lora_A.weight", .down), (".lora_B.weight", .up), (".lora_B.bias", .upBias)]

    /// Splits `body` into module and role with `lowRank` first, then the shared suffixes.
    static func split(_ body: String, lowRank: [(String, FactorRole)]) -> (module: String, role: FactorRole)? {
        for (suffix, role) in lowRank + shared where body.hasSuffix(suffix) && body.count > suffix.count {
            return (String(body.dropLast(suffix.count)), role)
        }
        return nil
    }
}

/// What an adapter holds for the transformer, assembled from its tensors.
struct AssembledParts {
    var modules: [LoRAModule] = []
    var deltas: [WeightDelta] = []
    var magnitudes: [String: DoRAMagnitude] = [:]
}

/// Collects the tensors of each module by role and assembles low-rank modules, LoKr/LoHa/full
/// deltas and DoRA magnitudes, checking partners and ranks.
struct ModuleAssembler {
    /// module name → role → key
    var parts: [String: [FactorRole: String]] = [:]
    var order: [String] = []

    mutating func add(module: String, role: FactorRole, key: String) {
        if parts[module] == nil { order.append(module) }
        parts[module, default: [:]][role] = key
    }

    /// Builds the low-rank modules only (throws on any other role); `alphaFor` supplies α for
    /// modules without an alpha tensor.
    func assemble(_ source: FactorSource, downName: String, upName: String,
                  alphaFor: (String) -> Float? = { _ in nil }, zeroAlphaIsRank: Bool = true) throws -> [LoRAModule] {
        let all = try assembleAll(source, alphaFor: alphaFor, zeroAlphaIsRank: zeroAlphaIsRank)
        if let d = all.deltas.first {
            throw LoRAError.badTensor(file: source.path, key: d.keys.first ?? d.name, byteOffset: nil, reason: "a \(d.kindName) delta is not expected in this dialect")
        }
        return all.modules
    }

    /// Builds everything the modules hold.
    func assembleAll(_ source: FactorSource, alphaFor: (String) -> Float? = { _ in nil },
                     zeroAlphaIsRank: Bool = true) throws -> AssembledParts {
        var out = AssembledParts()
        for name in order {
            let p = parts[name]!
            var used = Set<FactorRole>()
            var alpha = alphaFor(name)
            var storedAlpha: Float?
            if let alphaKey = p[.alpha] {
                let a = try source.scalar(alphaKey)
                storedAlpha = a
                alpha = (a == 0 && zeroAlphaIsRank) ? nil : a
                used.insert(.alpha)
            }
            if p[.down] != nil || p[.up] != nil || p[.upBias] != nil {
                out.modules.append(try lowRank(name, p, source, alpha: alpha))
                used.formUnion([.down, .up, .upBias])
            }
            let lokrRoles: Set<FactorRole> = [.lokrW1, .lokrW1a, .lokrW1b, .lokrW2, .lokrW2a, .lokrW2b, .lokrT2]
            if !lokrRoles.isDisjoint(with: p.keys) {
                out.deltas.append(try kronecker(name, p, source, alpha: storedAlpha))
                used.formUnion(lokrRoles)
            }
            let hadaRoles: Set<FactorRole> = [.hadaW1a, .hadaW1b, .hadaW2a, .hadaW2b, .hadaT1, .hadaT2]
            if !hadaRoles.isDisjoint(with: p.keys) {
                out.deltas.append(try hadamard(name, p, source, alpha: storedAlpha))
                used.formUnion(hadaRoles)
            }
            if let key = p[.diff] {
                out.deltas.append(WeightDelta(name: name, target: .weightOrWhole, kind: .full(try source.matrix(key)), scale: 1, keys: [key]))
                used.insert(.diff)
            }
            if let key = p[.diffBias] {
                let m = try source.matrix(key)
                out.deltas.append(WeightDelta(name: name, target: .bias, kind: .full(Matrix(shape: [m.values.count], values: m.values)), scale: 1, keys: [key]))
                used.insert(.diffBias)
            }
            if let key = p[.replacement] {
                let m = try source.matrix(key)
                out.deltas.append(WeightDelta(name: name, target: .weightOrWhole, kind: .replacement(Matrix(shape: [m.values.count], values: m.values)),
                                              scale: 1, keys: [key]))
                used.insert(.replacement)
            }
            for role in [FactorRole.magnitude, .magnitudeVector] {
                guard let key = p[role] else { continue }
                used.insert(role)
                let m = try source.matrix(key)
                if m.shape.count == 2, m.shape[0] == 1, m.shape[1] > 1 {
                    throw LoRAError.badTensor(file: source.path, key: key, byteOffset: source.offset(key),
                                              reason: "a DoRA magnitude of shape \(m.shape) normalises input columns (LyCORIS wd_on_out=False), which only output-row magnitudes [out, 1] support")
                }
                guard m.shape.count == 1 || (m.shape.count == 2 && m.shape[1] == 1) else {
                    throw LoRAError.badTensor(file: source.path, key: key, byteOffset: source.offset(key),
                                              reason: "a DoRA magnitude must be [out] or [out, 1], found \(m.shape)")
                }
                let hasDelta = used.contains(.down) || used.contains(.lokrW1) || used.contains(.hadaW1a) || used.contains(.diff)
                guard hasDelta else {
                    throw LoRAError.missingPartner(file: source.path, key: key, missing: name + " (a delta for the DoRA magnitude to rescale)")
                }
                out.magnitudes[name] = DoRAMagnitude(values: m.values, addsEpsilon: role == .magnitude, key: key)
            }
            if used.isDisjoint(with: [.down, .lokrW1, .hadaW1a, .diff, .diffBias, .replacement]), let key = p[.alpha] {
                throw LoRAError.missingPartner(file: source.path, key: key, missing: name + " (factors for this alpha)")
            }
        }
        return out
    }

    private func lowRank(_ name: String, _ p: [FactorRole: String], _ source: FactorSource, alpha: Float?) throws -> LoRAModule {
        guard let downKey = p[.down] else {
            let present = p[.up] ?? p[.upBias]!
            throw LoRAError.missingPartner(file: source.path, key: present, missing: Self.partnerKey(present))
        }
        guard let upKey = p[.up] else {
            throw LoRAError.missingPartner(file: source.path, key: downKey, missing: Self.partnerKey(downKey))
        }
        let down = try source.matrix(downKey)
        let up = try source.matrix(upKey)
        let okDown = down.shape.count == 2 || (down.shape.count == 4)
        let okUp = up.shape.count == 2 || (up.shape.count == 4 && up.shape[2] == 1 && up.shape[3] == 1)
        guard okDown, okUp, up.shape[1] == down.shape[0], down.shape[0] > 0 else {
            throw LoRAError.rankMismatch(file: source.path, downKey: downKey, downShape: down.shape, upKey: upKey, upShape: up.shape)
        }
        var bias: Matrix?
        if let biasKey = p[.upBias] {
            let b = try source.matrix(biasKey)
            guard b.values.count == up.shape[0] else {
                throw LoRAError.rankMismatch(file: source.path, downKey: upKey, downShape: up.shape, upKey: biasKey, upShape: b.shape)
            }
            bias = Matrix(shape: [b.values.count], values: b.values)
        }
        return LoRAModule(name: name, down: down, up: up, alpha: alpha, upBias: bias)
    }

    /// A 2-D factor or a thrown error naming its key.
    private func matrix2D(_ key: String, _ source: FactorSource, what: String) throws -> Matrix {
        let m = try source.matrix(key)
        guard m.shape.count == 2, m.values.count > 0 else {
            throw LoRAError.badTensor(file: source.path, key: key, byteOffset: source.offset(key),
                                      reason: "\(what) must be a matrix for a linear layer, found shape \(m.shape) (convolution and Tucker forms are not supported)")
        }
        return m
    }

    private func kronecker(_ name: String, _ p: [FactorRole: String], _ source: FactorSource, alpha: Float?) throws -> WeightDelta {
        if let t2 = p[.lokrT2] {
            throw LoRAError.badTensor(file: source.path, key: t2, byteOffset: source.offset(t2),
                                      reason: "the Tucker form (lokr_t2) is for convolutions; transformer linear layers have none")
        }
        func factor(_ full: FactorRole, _ a: FactorRole, _ b: FactorRole, _ label: String) throws -> (KronFactor, [String]) {
            if let k = p[full] { return (.full(try matrix2D(k, source, what: label)), [k]) }
            guard let ka = p[a], let kb = p[b] else {
                let present = p[a] ?? p[b] ?? p.values.sorted().first!
                throw LoRAError.missingPartner(file: source.path, key: present, missing: name + ".\(label) or \(label)_a and \(label)_b")
            }
            let ma = try matrix2D(ka, source, what: label + "_a"), mb = try matrix2D(kb, source, what: label + "_b")
            guard ma.columns == mb.rows else {
                throw LoRAError.rankMismatch(file: source.path, downKey: kb, downShape: mb.shape, upKey: ka, upShape: ma.shape)
            }
            // The product is formed in memory: a small file must not ask for a huge one.
            guard ma.rows.multipliedReportingOverflow(by: mb.columns).partialValue <= Self.maximumDenseFactor,
                  !ma.rows.multipliedReportingOverflow(by: mb.columns).overflow else {
                throw LoRAError.badTensor(file: source.path, key: ka, byteOffset: source.offset(ka),
                                          reason: "\(label)_a·\(label)_b would be [\(ma.rows), \(mb.columns)], larger than any Kronecker factor of a transformer weight")
            }
            return (.product(a: ma, b: mb), [ka, kb])
        }
        let (w1, k1) = try factor(.lokrW1, .lokrW1a, .lokrW1b, "lokr_w1")
        let (w2, k2) = try factor(.lokrW2, .lokrW2a, .lokrW2b, "lokr_w2")
        // LyCORIS LokrModule / ComfyUI: r from the low-rank factor; both factors full → scale 1.
        let scale: Float
        if let r = w1.rank ?? w2.rank {
            let a = (alpha == nil || alpha == 0) ? Float(r) : alpha!
            scale = a / Float(r)
        } else {
            scale = 1
        }
        return WeightDelta(name: name, target: .weight, kind: .kronecker(w1: w1, w2: w2), scale: scale, alpha: alpha, keys: k1 + k2)
    }

    private func hadamard(_ name: String, _ p: [FactorRole: String], _ source: FactorSource, alpha: Float?) throws -> WeightDelta {
        for role in [FactorRole.hadaT1, .hadaT2] {
            if let t = p[role] {
                throw LoRAError.badTensor(file: source.path, key: t, byteOffset: source.offset(t),
                                          reason: "the Tucker form (hada_t1/hada_t2) is for convolutions; transformer linear layers have none")
            }
        }
        var keys: [String] = []
        var ms: [Matrix] = []
        for (role, label) in [(FactorRole.hadaW1a, "hada_w1_a"), (.hadaW1b, "hada_w1_b"), (.hadaW2a, "hada_w2_a"), (.hadaW2b, "hada_w2_b")] {
            guard let k = p[role] else {
                throw LoRAError.missingPartner(file: source.path, key: p.values.sorted().first!, missing: name + "." + label)
            }
            keys.append(k)
            ms.append(try matrix2D(k, source, what: label))
        }
        guard ms[0].columns == ms[1].rows, ms[2].columns == ms[3].rows, ms[0].rows == ms[2].rows, ms[1].columns == ms[3].columns else {
            throw LoRAError.badTensor(file: source.path, key: keys[0], byteOffset: source.offset(keys[0]),
                                      reason: "LoHa factors disagree: w1_a \(ms[0].shape), w1_b \(ms[1].shape), w2_a \(ms[2].shape), w2_b \(ms[3].shape)")
        }
        let r = ms[1].rows
        let a = (alpha == nil || alpha == 0) ? Float(r) : alpha!
        return WeightDelta(name: name, target: .weight, kind: .hadamard(w1a: ms[0], w1b: ms[1], w2a: ms[2], w2b: ms[3]),
                           scale: a / Float(r), alpha: alpha, keys: keys)
    }

    /// The most values a dense Kronecker factor may have (2²⁶; FLUX's largest factor at factor 4 is 2²¹).
    static let maximumDenseFactor = 1 << 26

    /// The key of the other factor of a low-rank pair.
    static func partnerKey(_ key: String) -> String {
        for (have, want) in [(".lora_down.", ".lora_up."), (".lora_up.", ".lora_down."), (".lora_A.", ".lora_B."),
                             (".lora_B.", ".lora_A."), (".down.", ".up."), (".up.", ".down.")] {
            if let r = key.range(of: have, options: .backwards) {
                return key.replacingCharacters(in: r, with: want).replacingOccurrences(of: ".lora_A.bias", with: ".lora_A.weight")
            }
        }
        return key + " (its partner)"
    }
}
