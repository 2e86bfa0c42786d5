import GGUF
import SafeTensors
import SystemSupport

/// What a GGUF output is written as: the type asked for, and the type each tensor got.
public struct GGUFConversionResult: Sendable {
    /// The architecture converted.
    public var architecture: String
    /// Layout of the source keys.
    public var sourceLayout: KeyLayout
    /// Number of tensors written.
    public var tensorsWritten: Int
    /// Number of output tensors of each GGUF type (`Q8_0`: 120, `F32`: 300).
    public var tensorsByType: [String: Int]
    /// Size of the file written.
    public var fileBytes: Int
    /// The file written.
    public var outputPath: String
    /// Wall-clock seconds the conversion took.
    public var elapsedSeconds: Double
}

extension Converter {
    /// The GGUF types a checkpoint can be written in (gguf-py's quantizer writes them all).
    public static let ggufOutputTypes: [GGUFType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1]

    /// The tensors of a GGUF output the city96 way: the plan's names (original layout, no prefix)
    /// and shapes, each with the type `GGUFConventions.city96Type` gives it.
    /// Tensors are in name order, as city96's converter writes them (it iterates safetensors'
    /// sorted keys).
    public func ggufSpecs(type: GGUFType) -> [GGUFTensorSpec] {
        ggufOutputs.map { GGUFTensorSpec(name: $0.name, shape: $0.shape, type: GGUFConventions.city96Type(shape: $0.shape, requested: type)) }
    }

    /// The planned tensors in the order a GGUF output holds them: by name.
    var ggufOutputs: [PlannedTensor] { plan.outputs.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) } }

    /// Writes the converted checkpoint as a GGUF file the way city96's converter does (metadata
    /// `general.architecture` = the family id, `general.quantization_version`, `general.file_type`;
    /// small and 1-d tensors F32; bytes of each tensor equal to gguf-py's `quantize`), streamed in
    /// steps of whole rows through an atomic file: on failure nothing is left at `path`.
    /// Non-finite values are refused (gguf-py's block scales of them are not reproducible).
    @discardableResult
    public func writeGGUF(to path: String, type: GGUFType,
                          progress: ((Int, Int) -> Void)? = nil) throws(CheckpointError) -> GGUFConversionResult {
        let start = monotonicSeconds()
        guard type.isQuantizable else {
            throw .file(.io(file: path, operation: "write GGUF", message: "\(type.name) cannot be written; choose one of "
                            + Converter.ggufOutputTypes.map(\.name).joined(separator: ", ")))
        }
        do { try refuseOverwritingSource(path) } catch let error as SafeTensorsError { throw .file(error) } catch {
            throw .file(.io(file: path, operation: "write GGUF", message: "\(error)"))
        }
        let specs = ggufSpecs(type: type)
        let layout: GGUFLayout
        do {
            layout = try GGUFLayout(metadata: GGUFConventions.city96Metadata(architecture: plan.architecture.family.id, requested: type),
                                    tensors: specs, file: path)
        } catch { throw .file(.container(file: path, reason: error.description)) }
        do {
            let file = try AtomicFile(destination: path)
            var committed = false
            defer { if !committed { file.abandon() } }
            try file.write(layout.headerBytes)
            var done = layout.dataStart
            for (index, (planned, spec)) in zip(ggufOutputs, specs).enumerated() {
                try writeGGUFTensor(planned, as: spec.type, to: file, fileName: path)
                try file.write([UInt8](repeating: 0, count: layout.padding(after: index)))
                done = layout.tensors[index].byteRange.upperBound + layout.padding(after: index)
                progress?(done, layout.totalSize)
            }
            try file.commit()
            committed = true
        } catch let error as SystemError {
            throw .file(.system(error))
        } catch let error as SafeTensorsError {
            throw .file(error)
        } catch {
            throw .file(.io(file: path, operation: "write GGUF", message: "\(error)"))
        }
        var byType: [String: Int] = [:]
        for spec in specs { byType[spec.type.name, default: 0] += 1 }
        return GGUFConversionResult(architecture: plan.architecture.name, sourceLayout: plan.sourceLayout, tensorsWritten: specs.count,
                                    tensorsByType: byType, fileBytes: FileSystem.size(of: path), outputPath: path,
                                    elapsedSeconds: monotonicSeconds() - start)
    }

    /// Decodes `planned` from the source in steps of whole rows and writes it encoded as `type`.
    private func writeGGUFTensor(_ planned: PlannedTensor, as type: GGUFType, to file: AtomicFile, fileName: String) throws {
        let rowElements = planned.shape.dropFirst().reduce(1, *)
        // 0- and 1-d tensors are one row of blocks (city96 keeps them F32, so any length works).
        let oneRow = planned.shape.count <= 1
        for piece in planned.pieces {
            guard let entry = source.entry(piece.source) else { throw SafeTensorsError.tensorNotFound(file: source.path, tensor: piece.source) }
            if oneRow {
                let values = try entry.floats()
                try encode(values[(piece.rows.lowerBound * rowElements)..<(piece.rows.upperBound * rowElements)], type, planned.name, file, fileName)
                continue
            }
            // Whole rows at a time, at most 16 MB of Float (and `encode` writes them in pieces
            // the output's buffer holds).
            let stepRows = max(1, (16 << 20) / max(rowElements * 4, 1))
            var row = piece.rows.lowerBound
            var scratch = [Float](repeating: 0, count: min(stepRows, piece.rows.count) * rowElements)
            while row < piece.rows.upperBound {
                let rows = min(stepRows, piece.rows.upperBound - row)
                try scratch.withUnsafeMutableBufferPointer { (all: inout UnsafeMutableBufferPointer<Float>) throws in
                    let part = UnsafeMutableBufferPointer(rebasing: all[0..<(rows * rowElements)])
                    try entry.decodeRows(row..<(row + rows), into: part)
                }
                try encode(scratch[0..<(rows * rowElements)], type, planned.name, file, fileName)
                row += rows
            }
        }
    }

    /// Encodes `values` (whole rows) as `type` and appends them to `file`, in pieces of whole
    /// blocks no larger than the file's write buffer.
    private func encode(_ values: ArraySlice<Float>, _ type: GGUFType, _ tensor: String, _ file: AtomicFile, _ fileName: String) throws {
        guard type.byteCount(elements: values.count) != nil else {
            throw SafeTensorsError.conversion(file: fileName, tensor: tensor, reason: "\(values.count) values are not whole \(type.name) blocks")
        }
        let blockBytes = type.byteCount(elements: type.blockSize) ?? 1
        let perPiece = max(1, file.regionCapacity / max(blockBytes, 1)) * type.blockSize
        var nonFinite = 0
        var start = values.startIndex
        while start < values.endIndex {
            let piece = values[start..<min(values.endIndex, start + perPiece)]
            try file.withWritableRegion(count: type.byteCount(elements: piece.count)!) { out in
                piece.withUnsafeBufferPointer { nonFinite += type.quantize($0, into: out) }
            }
            start = piece.endIndex
        }
        if nonFinite > 0 && type.isBlockQuantized {
            throw SafeTensorsError.conversion(file: fileName, tensor: tensor,
                                              reason: "holds \(nonFinite) NaN or infinite values, which \(type.name) blocks cannot represent")
        }
    }
}
