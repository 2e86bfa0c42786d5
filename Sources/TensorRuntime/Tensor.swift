/// A dense Float32 tensor: a shape and its values in row-major order. A value type (the storage is
/// a copy-on-write array), used for inputs, outputs, constants and gradients.
public struct Tensor: Sendable, Equatable {
    /// The size of each dimension, outermost first. `[]` is a scalar.
    public var shape: [Int]
    /// The values, row-major; `scalars.count == shape.reduce(1, *)`.
    public var scalars: [Float]

    /// A tensor of `shape` holding `scalars` (row-major). The counts must agree.
    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in \(shape)")
        precondition(scalars.count == shape.reduce(1, *),
                     "Tensor: \(scalars.count) values do not fill shape \(shape)")
        self.shape = shape
        self.scalars = scalars
    }

    /// A tensor of `shape` filled with `value` (zero by default).
    public init(repeating value: Float = 0, shape: [Int]) {
        self.init(shape: shape, scalars: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    /// A 0-d tensor holding one value.
    public init(scalar: Float) { self.init(shape: [], scalars: [scalar]) }

    /// The number of values.
    public var count: Int { scalars.count }

    /// The number of dimensions.
    public var rank: Int { shape.count }

    /// The same values seen with another shape of the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, scalars: scalars)
    }
}
