/// A stretch of output rows shared by a module and a module of the other layout.
public struct ModulePiece: Sendable, Hashable {
    /// The module in the other layout (no key prefix).
    public var target: String
    /// Rows of the source module's output (rows of its weight).
    public var sourceRows: Range<Int>
    /// The same rows, as rows of the target module's output.
    public var targetRows: Range<Int>
    /// Total output rows of the target module.
    public var targetRowCount: Int

    /// Creates a piece.
    public init(target: String, sourceRows: Range<Int>, targetRows: Range<Int>, targetRowCount: Int) {
        self.target = target
        self.sourceRows = sourceRows
        self.targetRows = targetRows
        self.targetRowCount = targetRowCount
    }
}

/// The correspondence between one module (a linear layer, norm or embedding) and the module(s) of
/// the other layout, row by row: what a LoRA converter needs to split a fused-qkv adapter exactly
/// (B split by rows, A shared), to fuse split adapters, and to swap B's rows where modulation
/// halves are swapped.
///
/// Examples (hidden H): `joint_blocks.3.x_block.attn.qkv` → to_q (rows 0..<H → 0..<H), to_k
/// (H..<2H → 0..<H), to_v (2H..<3H → 0..<H); `transformer_blocks.3.attn.to_k` → qkv (0..<H → H..<2H);
/// `final_layer.adaLN_modulation.1` → `norm_out.linear` (0..<H → H..<2H, H..<2H → 0..<H).
public struct ModuleMapping: Sendable, Hashable {
    /// The module asked about (no key prefix).
    public var source: String
    /// Its layout.
    public var sourceLayout: KeyLayout
    /// Output rows of the source module.
    public var sourceRowCount: Int
    /// How rows move between the layouts (the table's transform, seen from the original side).
    public var transform: RowTransform
    /// Pieces covering every source row once, ordered by source rows.
    public var pieces: [ModulePiece]

    /// Creates a mapping.
    public init(source: String, sourceLayout: KeyLayout, sourceRowCount: Int, transform: RowTransform,
                pieces: [ModulePiece]) {
        self.source = source
        self.sourceLayout = sourceLayout
        self.sourceRowCount = sourceRowCount
        self.transform = transform
        self.pieces = pieces
    }

    /// The other layout.
    public var targetLayout: KeyLayout { sourceLayout == .original ? .diffusers : .original }

    /// The target modules, each once, in order of the source rows.
    public var targets: [String] {
        var seen = Set<String>()
        return pieces.map(\.target).filter { seen.insert($0).inserted }
    }

    /// True when the module is renamed with its rows unchanged.
    public var isRename: Bool {
        pieces.count == 1 && pieces[0].sourceRows == pieces[0].targetRows
            && pieces[0].targetRowCount == sourceRowCount
    }

    /// True when the two row halves trade places (modulation shift,scale ↔ scale,shift).
    public var swapsHalves: Bool { transform == .swapHalves }
}

extension Architecture {
    /// The module(s) of the other layout that hold the rows of module `name` of `layout`.
    ///
    /// `name` is a module path without parameter (`joint_blocks.3.x_block.attn.qkv`,
    /// `double_blocks.0.img_attn.qkv`, `single_blocks.2.linear1`, `transformer_blocks.3.attn.to_q`);
    /// a leading `model.diffusion_model.` or `diffusion_model.` is ignored for the original layout.
    /// Throws `CheckpointError.unknownModule` when the architecture has no such module.
    public func mapModule(_ name: String, from layout: KeyLayout) throws(CheckpointError) -> ModuleMapping {
        let bare = layout == .original ? String(name.dropFirst(KeyPrefix.of(name).rawValue.count)) : name
        let dims = LayoutDimensions(config)
        for m in table.matchModule(bare, in: layout) {
            let rule = table.rules[m.ruleIndex]
            guard dims.blockIndices(rule.scope).contains(m.block), dims.holds(rule.condition, block: m.block) else { continue }
            let instance = table.moduleInstance(ruleIndex: m.ruleIndex, block: m.block, dims: dims)
            switch layout {
            case .original:
                let pieces = instance.segments.sorted { $0.originalRows.lowerBound < $1.originalRows.lowerBound }.map {
                    ModulePiece(target: instance.diffusersModules[$0.part], sourceRows: $0.originalRows,
                                targetRows: $0.diffusersRows, targetRowCount: instance.diffusersRows($0.part))
                }
                return ModuleMapping(source: bare, sourceLayout: layout, sourceRowCount: instance.originalRows,
                                     transform: rule.transform, pieces: pieces)
            case .diffusers:
                let pieces = instance.segments.filter { $0.part == m.part }
                    .sorted { $0.diffusersRows.lowerBound < $1.diffusersRows.lowerBound }.map {
                        ModulePiece(target: instance.originalModule, sourceRows: $0.diffusersRows,
                                    targetRows: $0.originalRows, targetRowCount: instance.originalRows)
                    }
                return ModuleMapping(source: bare, sourceLayout: layout, sourceRowCount: instance.diffusersRows(m.part),
                                     transform: rule.transform, pieces: pieces)
            }
        }
        throw .unknownModule(name: name, layout: layout, architecture: self.name)
    }

    /// Every module path of the architecture in `layout` (no key prefix), in layout-table order;
    /// LoRA readers use it to resolve flattened names such as kohya's `lora_unet_joint_blocks_3_…`.
    public func moduleNames(in layout: KeyLayout) -> [String] {
        table.moduleInstances(LayoutDimensions(config)).flatMap {
            layout == .original ? [$0.originalModule] : $0.diffusersModules
        }
    }
}
