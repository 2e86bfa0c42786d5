import SafeTensors

extension Architecture {
    /// The exact keys and shapes of this architecture's checkpoint in `layout`, in layout-table
    /// order, generated from the layout table and the configuration.
    ///
    /// `prefix` applies to the original layout only; by default `model.diffusion_model.` for SD3 and
    /// none for FLUX.
    public func expectedTensors(layout: KeyLayout, prefix: KeyPrefix? = nil) -> [TensorShapeEntry] {
        let p = layout == .original ? (prefix ?? .defaultOriginal(for: family)).rawValue : ""
        return table.parameterInstances(LayoutDimensions(config)).flatMap { instance in
            zip(instance.names(in: layout), instance.shapes(in: layout)).map {
                TensorShapeEntry(name: p + $0.0, shape: $0.1)
            }
        }
    }

    /// Tensor specs of a synthetic checkpoint of this architecture, all of element type `dtype`;
    /// see `expectedTensors(layout:prefix:)`.
    public func syntheticSpecs(layout: KeyLayout, dtype: DType, prefix: KeyPrefix? = nil) -> [TensorSpec] {
        expectedTensors(layout: layout, prefix: prefix).map { TensorSpec(name: $0.name, dtype: dtype, shape: $0.shape) }
    }

    /// Number of values (parameters) of the architecture, position table included.
    public var parameterCount: Int {
        expectedTensors(layout: .original).reduce(0) { $0 + $1.shape.reduce(1, *) }
    }
}

/// Tensor specs with the real names and shapes of a published model's transformer checkpoint in
/// `layout` (SD3.5 Medium: 665 original tensors under `model.diffusion_model.`, 909 diffusers;
/// FLUX.1-dev: 780 original, 1160 diffusers), for `flowguard synth` to fill with random bytes.
public func syntheticSpecs(variant: KnownVariant, layout: KeyLayout, dtype: DType,
                           prefix: KeyPrefix? = nil) -> [TensorSpec] {
    Architecture(variant).syntheticSpecs(layout: layout, dtype: dtype, prefix: prefix)
}
