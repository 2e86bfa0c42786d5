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

/// Changes rows of some source tensors in place on their way into a converted GGUF file: `apply`
/// is called with a tensor of `sources`, the rows held (source rows, dim 0), their values
/// (`rows.count × columns`, row-major) and `columns`. A LoRA merge writing GGUF directly adds each
/// row's delta here. Called from several threads at once, for disjoint rows.
public struct SourceRowTransform: Sendable {
    /// The source tensors `apply` changes; the others are not passed to it.
    public var sources: Set<String>
    /// The change.
    public var apply: @Sendable (_ source: String, _ rows: Range<Int>, _ values: UnsafeMutableBufferPointer<Float>, _ columns: Int) -> Void

    /// A transform of `sources` by `apply`.
    public init(sources: Set<String>,
                apply: @escaping @Sendable (_ source: String, _ rows: Range<Int>, _ values: UnsafeMutableBufferPointer<Float>, _ columns: Int) -> Void) {
        self.sources = sources
        self.apply = apply
    }
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
    /// blocks of whole rows on `threads` workers through an atomic file: on failure nothing is
    /// left at `path`. `transform`, when given, changes the decoded source rows before they are
    /// encoded (see `SourceRowTransform`).
    /// Non-finite values are refused (gguf-py's block scales of them are not reproducible).
    @discardableResult
    public func writeGGUF(to path: String, type: GGUFType, threads: Int = 1, progress: ((Int, Int) -> Void)? = nil,
                          transform: SourceRowTransform? = nil) throws(CheckpointError) -> GGUFConversionResult {
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
            try file.write([UInt8](repeating: 0, count: layout.headerPadding))
            var done = layout.dataStart
            var scratch: [GGUFBlockScratch] = []
            for (index, (planned, spec)) in zip(ggufOutputs, specs).enumerated() {
                try writeGGUFTensor(planned, as: spec.type, to: file, fileName: path, threads: threads, transform: transform,
                                    scratch: &scratch)
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

    /// Decodes `planned` from the source in blocks of whole rows (of innermost rows, for a tensor
    /// whose dim-0 rows are each larger than a block) and writes it encoded as `type`:
    /// `threads` workers each read a block's stored bytes with one `pread`, decode and quantize
    /// it and write it in place (`pwrite`); a wave of blocks is appended once all are written.
    /// Memory: one block of values and of bytes per worker, whatever the tensor's size.
    private func writeGGUFTensor(_ planned: PlannedTensor, as type: GGUFType, to file: AtomicFile, fileName: String,
                                 threads: Int, transform: SourceRowTransform?, scratch: inout [GGUFBlockScratch]) throws {
        let rowElements = planned.shape.dropFirst().reduce(1, *)
        // 0- and 1-d tensors are one row of blocks (city96 keeps them F32, so any length works).
        let oneRow = planned.shape.count <= 1
        let workers = max(1, threads)
        while scratch.count < workers { scratch.append(GGUFBlockScratch()) }
        for piece in planned.pieces {
            guard let entry = source.entry(piece.source) else { throw SafeTensorsError.tensorNotFound(file: source.path, tensor: piece.source) }
            let transformed = transform.map { $0.sources.contains(piece.source) } ?? false
            guard !oneRow, type.byteCount(elements: rowElements) != nil else {
                var values = Array(try entry.floats()[(piece.rows.lowerBound * rowElements)..<(piece.rows.upperBound * rowElements)])
                if let transform, transformed {
                    values.withUnsafeMutableBufferPointer { transform.apply(piece.source, piece.rows, $0, rowElements) }
                }
                try encode(values[...], type, planned.name, file, fileName)
                continue
            }
            // A dim-0 row larger than a block (SD3's pos_embed: one row of 226 M values) streams
            // in runs of innermost rows instead, unless a transform works on its dim-0 rows.
            var unitElements = rowElements
            var units = piece.rows
            if rowElements > 1 << 20, !transformed, let inner = planned.shape.last, inner > 0, rowElements % inner == 0,
               type.byteCount(elements: inner) != nil, entry.innerRowByteCount != nil {
                unitElements = inner
                units = (piece.rows.lowerBound * (rowElements / inner))..<(piece.rows.upperBound * (rowElements / inner))
            }
            let inner = unitElements != rowElements
            guard let rowBytes = type.byteCount(elements: unitElements) else {
                throw SafeTensorsError.conversion(file: fileName, tensor: planned.name, reason: "rows of \(unitElements) values are not whole \(type.name) blocks")
            }
            let blockRows = max(1, (1 << 20) / max(unitElements, 1))
            var row = units.lowerBound
            while row < units.upperBound {
                let waveStart = row
                var blocks: [Range<Int>] = []
                while row < units.upperBound && blocks.count < 4 * workers {
                    let end = min(units.upperBound, row + blockRows)
                    blocks.append(row..<end)
                    row = end
                }
                try file.beginPositionedWrites()
                let scratch = scratch
                for worker in scratch { worker.failure = nil; worker.nonFinite = 0 }
                parallelForDynamic(blocks.count, threads: workers) { w, i in
                    scratch[w].encode(entry, rows: blocks[i], rowElements: unitElements, innermost: inner, as: type, to: file,
                                      at: (blocks[i].lowerBound - waveStart) * rowBytes, transform: transformed ? transform.map { t in
                                          { t.apply(piece.source, blocks[i], $0, rowElements) }
                                      } : nil)
                }
                for worker in scratch {
                    if let failure = worker.failure { throw failure }
                    if worker.nonFinite > 0 && type.isBlockQuantized {
                        throw SafeTensorsError.conversion(file: fileName, tensor: planned.name,
                                                          reason: "holds NaN or infinite values, which \(type.name) blocks cannot represent")
                    }
                }
                try file.advance(by: (row - waveStart) * rowBytes)
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

/// One worker's buffers for a GGUF output: a block's stored bytes, its values and its encoded
/// bytes, grown to the largest block and reused. A class because each worker mutates its own
/// instance while the others run.
final class GGUFBlockScratch {
    private var stored: [UInt8] = []
    private var values: [Float] = []
    private var encoded: [UInt8] = []
    /// The first error of the current wave.
    var failure: Error?
    /// Non-finite values met in the current wave.
    var nonFinite = 0

    /// Decodes `rows` of `entry` (dim-0 rows, or innermost rows when `innermost`; their bytes
    /// read with one `pread`), passes them through `transform`, quantizes them as `type` and
    /// writes them `offset` bytes past the file's end.
    func encode(_ entry: TensorEntry, rows: Range<Int>, rowElements: Int, innermost: Bool = false, as type: GGUFType,
                to file: AtomicFile, at offset: Int, transform: ((UnsafeMutableBufferPointer<Float>) -> Void)? = nil) {
        guard failure == nil else { return }
        let count = rows.count * rowElements
        let bytes = type.byteCount(elements: count) ?? 0
        if values.count < count { values = [Float](repeating: 0, count: count) }
        if encoded.count < bytes { encoded = [UInt8](repeating: 0, count: bytes) }
        let storedBytes = ((innermost ? entry.innerRowByteCount : entry.rowByteCount) ?? 0) * rows.count
        if stored.count < storedBytes { stored = [UInt8](repeating: 0, count: storedBytes) }
        do {
            try values.withUnsafeMutableBufferPointer { all in
                try stored.withUnsafeMutableBytes { raw in
                    let output = UnsafeMutableBufferPointer(rebasing: all[0..<count])
                    if innermost {
                        try entry.decodeInnerRows(rows, into: output, reading: raw)
                    } else {
                        try entry.decodeRows(rows, into: output, reading: raw)
                    }
                }
                transform?(UnsafeMutableBufferPointer(rebasing: all[0..<count]))
            }
            values.withUnsafeBufferPointer { all in
                encoded.withUnsafeMutableBytes { raw in
                    nonFinite += type.quantize(UnsafeBufferPointer(rebasing: all[0..<count]),
                                               into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<bytes]))
                }
            }
            try encoded.withUnsafeBytes { raw in try file.write(UnsafeRawBufferPointer(rebasing: raw[0..<bytes]), atEndOffset: offset) }
        } catch {
            failure = error
        }
    }
}
