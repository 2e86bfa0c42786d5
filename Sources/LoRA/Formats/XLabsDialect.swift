import Checkpoints
import SafeTensors

/// XLabs FLUX adapters (read only): `double_blocks.N.processor.{qkv,proj}_lora{1,2}.{down,up}.weight`
/// (1 = image stream, 2 = text stream) and `single_blocks.N.processor.{qkv,proj}_lora.{down,up}.weight`.
/// No alpha is stored: the scale is 1 (XLabs multiplies by network_alpha/r only when one is passed at load time).
/// ComfyUI-converted copies carry the same keys under `diffusion_model.`.
enum XLabsDialect: LoRADialect {
    static let format = LoRAFormat.xlabs

    static func claims(_ keys: [String], isFolder: Bool) -> Bool {
        keys.contains { parse($0) != nil }
    }

    static func read(_ source: FactorSource, context: DialectContext) throws -> LoRAAdapter {
        try read(source)
    }

    /// The original module and role a key stands for, or nil.
    static func parse(_ key: String) -> (module: String, role: FactorRole, singleQKV: Bool)? {
        let bare = key.hasPrefix(KeyPrefix.comfy.rawValue) ? String(key.dropFirst(KeyPrefix.comfy.rawValue.count)) : key
        let parts = bare.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 6, parts[2] == "processor", parts[5] == "weight", Int(parts[1]) != nil else { return nil }
        let role: FactorRole
        switch parts[4] { case "down": role = .down; case "up": role = .up; default: return nil }
        let block = parts[0] + "." + parts[1] + "."
        switch (parts[0], parts[3]) {
        case ("double_blocks", "qkv_lora1"): return (block + "img_attn.qkv", role, false)
        case ("double_blocks", "qkv_lora2"): return (block + "txt_attn.qkv", role, false)
        case ("double_blocks", "proj_lora1"): return (block + "img_attn.proj", role, false)
        case ("double_blocks", "proj_lora2"): return (block + "txt_attn.proj", role, false)
        case ("single_blocks", "qkv_lora"): return (block + "linear1", role, true)
        case ("single_blocks", "proj_lora"): return (block + "linear2", role, false)
        default: return nil
        }
    }

    /// Reads an XLabs file into original FLUX naming. A single block's `qkv_lora` covers only the
    /// q/k/v rows of `linear1`; B gets zero rows for the MLP part (4·H rows, H = rows/3).
    static func read(_ source: FactorSource) throws -> LoRAAdapter {
        var assembler = ModuleAssembler()
        var unexplained: [String] = []
        var single = Set<String>()
        for key in source.keys {
            guard let p = parse(key) else { unexplained.append(key); continue }
            assembler.add(module: p.module, role: p.role, key: key)
            if p.singleQKV { single.insert(p.module) }
        }
        if !unexplained.isEmpty {
            throw LoRAError.unknownDialect(file: source.path, format: .xlabs, keys: Array(unexplained.prefix(5)), count: unexplained.count)
        }
        var modules = try assembler.assemble(source, downName: "down", upName: "up")
        for i in modules.indices where single.contains(modules[i].name) {
            let up = modules[i].up
            let h = up.rows / 3
            modules[i].up = Matrix(shape: [up.rows + 4 * h, up.columns], values: up.values + [Float](repeating: 0, count: 4 * h * up.columns))
        }
        var extra: [String: String] = [:]
        for (k, v) in source.metadata { extra[k] = v }
        return LoRAAdapter(modules: modules, layout: .original, format: .xlabs, family: .flux, extraMetadata: extra)
    }
}
