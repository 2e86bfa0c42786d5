/// Scratch memory reused across the operations of one graph (and its recorded backward passes):
/// Float32 panels of widened half-precision weights, attention score matrices. One buffer per
/// `Slot`, grown on demand and never shrunk; its contents are not preserved between uses.
final class Workspace {
    /// The independent scratch buffers (an operation may use several at once).
    enum Slot: Int, CaseIterable {
        case weightPanel, scores, scoreGradient, rowScale
    }

    private var buffers: [UnsafeMutablePointer<Float>?] = Array(repeating: nil, count: Slot.allCases.count)
    private var capacities: [Int] = Array(repeating: 0, count: Slot.allCases.count)

    /// A buffer of at least `count` uninitialised values, valid until the next request for the
    /// same slot.
    func buffer(_ slot: Slot, count: Int) -> UnsafeMutablePointer<Float> {
        let i = slot.rawValue
        if let existing = buffers[i], capacities[i] >= count { return existing }
        buffers[i]?.deallocate()
        let fresh = UnsafeMutablePointer<Float>.allocate(capacity: max(16, count))
        Tensor.adviseHugePages(fresh, count: max(16, count))
        buffers[i] = fresh
        capacities[i] = max(16, count)
        return fresh
    }

    deinit { for b in buffers { b?.deallocate() } }
}
