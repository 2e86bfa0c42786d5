import SafeTensors

/// The only facts about a tensor this module looks at: its key and its shape.
///
/// Detection and planning take `[TensorShapeEntry]` so that they work the same on a file's header
/// (`[TensorInfo]`), on tensors about to be written (`[TensorSpec]`) and on hand-made lists in tests.
/// Nothing here reads tensor data.
public struct TensorShapeEntry: Sendable, Hashable {
    /// The tensor's key exactly as stored, prefix included.
    public var name: String
    /// Row-major shape; `[]` is a scalar.
    public var shape: [Int]

    /// Creates an entry from a key and a shape.
    public init(name: String, shape: [Int]) {
        self.name = name
        self.shape = shape
    }

    /// The name and shape of a tensor found in a file header.
    public init(_ info: TensorInfo) {
        self.init(name: info.name, shape: info.shape)
    }

    /// The name and shape of a tensor about to be written.
    public init(_ spec: TensorSpec) {
        self.init(name: spec.name, shape: spec.shape)
    }
}

extension Array where Element == TensorShapeEntry {
    /// Entries for every tensor of a file header, in header order.
    public init(_ infos: [TensorInfo]) {
        self = infos.map(TensorShapeEntry.init)
    }

    /// Entries for tensors about to be written, in the given order.
    public init(_ specs: [TensorSpec]) {
        self = specs.map(TensorShapeEntry.init)
    }
}
