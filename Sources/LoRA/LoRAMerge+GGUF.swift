import BLAS
import Checkpoints
import GGUF
import SafeTensors
import SystemSupport

extension LoRAMerge {
    /// Writes `base` with `adapter` merged in (or taken out) as the GGUF file `output`: city96
    /// names (original layout, no prefix), every tensor of type `type` by city96's rule (small and
    /// 1-d tensors F32), the base's transformer only (the other components of an all-in-one file
    /// are left out). The delta is added to the decoded base rows in Float32 on their way to the
    /// quantizer, block of rows by block of rows on `threads` workers: the bytes equal a merge into
    /// a Float32 `.safetensors` file converted to GGUF afterwards, without that file (48 GB at
    /// FLUX.1-dev size). Only a merge that widens a layer (BFL Control) still goes through a
    /// Float32 staging file beside `output`, removed whatever happens. `progress(bytesDone,
    /// bytesTotal)` follows the output file. On failure nothing is left at `output`.
    public static func mergeToGGUF(base: TensorCollection, adapter: LoRAAdapter, scale: Float = 1, unmerge: Bool = false,
                                   output: String, type: GGUFType, threads: Int = 1,
                                   progress: ((Int, Int) -> Void)? = nil) throws -> (MergeReport, GGUFConversionResult) {
        let start = monotonicSeconds()
        let (detected, placement, kernel) = try prepare(base: base, adapter: adapter, scale: scale, unmerge: unmerge,
                                                        output: output, folder: false)
        if !placement.widened.isEmpty {
            return try mergeToGGUFThroughStaging(base: base, adapter: adapter, scale: scale, unmerge: unmerge, output: output,
                                                 type: type, threads: threads, progress: progress)
        }
        for name in placement.touchedTensors {
            if let entry = base.entry(name), !entry.info.dtype.isFloatingPoint {
                throw LoRAMergeError.notFloatingPoint(file: entry.file.path, tensor: name, dtype: entry.info.dtype)
            }
        }
        let converter = try Converter(source: base.transformerOnly(), to: .original, prefix: KeyPrefix.none)
        let slices = placement.slices
        // Each worker's sgemm runs on its own thread: OpenBLAS is held to one thread per call.
        let previousBLASThreads = BLAS.threadCount
        if threads > 1 { BLAS.setThreadCount(1) }
        defer { if threads > 1 { BLAS.setThreadCount(previousBLASThreads) } }
        let transform = SourceRowTransform(sources: Set(slices.keys)) { source, rows, values, columns in
            guard let tensorSlices = slices[source] else { return }
            kernel.apply(tensorSlices, block: rows, to: values, columns: columns)
        }
        let written = try converter.writeGGUF(to: output, type: type, threads: threads, progress: progress, transform: transform)
        var report = MergeReport(architecture: detected.architecture.name, baseLayout: detected.layout,
                                 adapterLayout: adapter.layout, modulesMerged: adapter.modules.count + adapter.deltas.count,
                                 touchedTensors: placement.touchedTensors, tensorsWritten: written.tensorsWritten,
                                 dataBytes: written.fileBytes, scale: scale, unmerged: unmerge, conversion: ConversionReport(),
                                 tensorsByDType: [:], outputPath: output, outputFiles: [output],
                                 elapsedSeconds: monotonicSeconds() - start)
        report.textEncoderModulesSkipped = adapter.textEncoderModules.count
        report.kinds = adapter.kinds.filter { $0 != "lora" || !adapter.modules.isEmpty }
        return (report, written)
    }

    /// The merge into a Float32 `.safetensors` staging file beside `output`, converted to GGUF
    /// from there; for merges the converter cannot take row by row (a layer widened by BFL Control).
    static func mergeToGGUFThroughStaging(base: TensorCollection, adapter: LoRAAdapter, scale: Float, unmerge: Bool,
                                          output: String, type: GGUFType, threads: Int,
                                          progress: ((Int, Int) -> Void)?) throws -> (MergeReport, GGUFConversionResult) {
        let staging = FileSystem.parentFolder(of: output) + "/.flowguard-merge-\(ProcessControl.currentID).safetensors"
        defer { _ = FileSystem.removeFile(staging) }
        var report = try merge(base: base, adapter: adapter, scale: scale, output: staging, dtype: .f32, unmerge: unmerge,
                               threads: threads) { done, total in progress?(done / 2, total) }
        let merged = try TensorCollection.checkpoint(staging)
        let converter = try Converter(source: merged.transformerOnly(), to: .original, prefix: KeyPrefix.none)
        let written = try converter.writeGGUF(to: output, type: type, threads: threads, progress: { done, total in
            progress?(total / 2 + done / 2, total)
        })
        report.outputPath = output
        report.outputFiles = [output]
        report.tensorsWritten = written.tensorsWritten
        report.dataBytes = written.fileBytes
        report.tensorsByDType = [:]
        return (report, written)
    }
}
