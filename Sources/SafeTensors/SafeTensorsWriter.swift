import JSON
import SystemSupport

/// The planned layout of a safetensors file: header bytes and where each tensor goes, computed
/// from tensor descriptions alone, before any tensor data exists.
public struct SafeTensorsLayout: Sendable {
    /// The tensors in the order their bytes are written (the reference writer's order).
    public let tensors: [TensorInfo]
    /// The first 8 + N bytes of the file: the length field and the space-padded JSON header.
    public let headerBytes: [UInt8]
    /// Size of the whole file.
    public var totalSize: Int { headerBytes.count + (tensors.last?.dataRange.upperBound ?? 0) }

    /// Plans a file the way the reference writer does: tensors sorted by dtype alignment
    /// (largest first) then by name, compact JSON with `__metadata__` first (keys sorted), the
    /// header padded with spaces to a multiple of 8.
    public init(specs: [TensorSpec], metadata: [String: String]?, file: String = "<output>") throws(SafeTensorsError) {
        var seen = Set<String>()
        for spec in specs {
            if spec.name == "__metadata__" {
                throw .invalidTensorName(file: file, tensor: spec.name, reason: "a tensor may not be called __metadata__")
            }
            if !seen.insert(spec.name).inserted {
                throw .invalidTensorName(file: file, tensor: spec.name, reason: "tensor name given twice")
            }
            if spec.name.utf8.contains(0) {
                throw .invalidTensorName(file: file, tensor: spec.name, reason: "tensor names may not contain NUL")
            }
        }
        let ordered = specs.sorted { a, b in
            a.dtype.alignmentRank != b.dtype.alignmentRank ? a.dtype.alignmentRank > b.dtype.alignmentRank
                                                           : Array(a.name.utf8).lexicographicallyPrecedes(Array(b.name.utf8))
        }
        var infos: [TensorInfo] = []
        infos.reserveCapacity(ordered.count)
        var offset = 0
        for spec in ordered {
            guard spec.shape.allSatisfy({ $0 >= 0 }) else {
                throw .invalidSpec(file: file, tensor: spec.name, reason: "negative dimension in shape \(spec.shape)")
            }
            guard let size = spec.byteCount else {
                throw .invalidSpec(file: file, tensor: spec.name, reason: "shape \(spec.shape) of \(spec.dtype.rawValue) is not a whole number of bytes or overflows")
            }
            infos.append(TensorInfo(name: spec.name, dtype: spec.dtype, shape: spec.shape, dataRange: offset..<(offset + size)))
            offset += size
        }
        var json = "{"
        var first = true
        if let metadata {
            json += "\"__metadata__\":{"
            for (i, key) in metadata.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }).enumerated() {
                if i > 0 { json += "," }
                JSONValue.writeString(key, to: &json)
                json += ":"
                JSONValue.writeString(metadata[key]!, to: &json)
            }
            json += "}"
            first = false
        }
        for info in infos {
            if !first { json += "," }
            first = false
            JSONValue.writeString(info.name, to: &json)
            json += ":{\"dtype\":\"\(info.dtype.rawValue)\",\"shape\":["
            json += info.shape.map(String.init).joined(separator: ",")
            json += "],\"data_offsets\":[\(info.dataRange.lowerBound),\(info.dataRange.upperBound)]}"
        }
        json += "}"
        var body = Array(json.utf8)
        let padded = (body.count + 7) / 8 * 8
        guard padded <= 100_000_000 else { throw .headerTooLargeToWrite(file: file, size: padded) }
        body.append(contentsOf: repeatElement(0x20, count: padded - body.count))
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 + padded)
        withUnsafeBytes(of: UInt64(padded).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: body)
        tensors = infos
        headerBytes = bytes
    }
}

/// Where a producer writes one tensor's bytes while a file is being written. The writer checks
/// that exactly the planned number of bytes arrives.
public final class TensorSink {
    /// The tensor being written, with its planned byte range.
    public let info: TensorInfo
    private let file: AtomicFile
    /// Bytes written to this tensor so far.
    public private(set) var written = 0

    init(info: TensorInfo, file: AtomicFile) {
        self.info = info
        self.file = file
    }

    /// Bytes still expected.
    public var remaining: Int { info.byteCount - written }

    /// Appends raw bytes of the tensor.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SafeTensorsError) {
        guard bytes.count <= remaining else {
            throw .writeSizeMismatch(file: file.destination, tensor: info.name, expected: info.byteCount, written: written + bytes.count)
        }
        do { try file.write(bytes) } catch { throw .system(error) }
        written += bytes.count
    }

    /// Appends bytes `range` (absolute offsets) of a mapped file: copied by the kernel when it
    /// can, otherwise through the mapping in 64 MiB steps whose pages are dropped behind, so the
    /// process never holds more than one step of the source however large the tensor.
    public func copy(from source: SafeTensorsFile, fileRange range: Range<Int>) throws(SafeTensorsError) {
        guard range.count <= remaining else {
            throw .writeSizeMismatch(file: file.destination, tensor: info.name, expected: info.byteCount, written: written + range.count)
        }
        let copied: Bool
        do { copied = try file.appendKernelCopy(from: source.descriptor, offset: range.lowerBound, count: range.count) } catch { throw .system(error) }
        if copied {
            written += range.count
            return
        }
        let step = 64 << 20
        var position = range.lowerBound
        while position < range.upperBound {
            let end = min(range.upperBound, position + step)
            try source.withBytes(fileRange: position..<end) { (raw) throws(SafeTensorsError) in try write(raw) }
            source.advise(.dontNeed, fileRange: position..<end)
            position = end
        }
    }

    /// Prepares for `write(_:atTensorOffset:)`: the bytes so far go to the file first.
    public func beginPositionedWrites() throws(SafeTensorsError) {
        do { try file.beginPositionedWrites() } catch { throw .system(error) }
    }

    /// Writes `bytes` at `offset` bytes past what the sink has appended so far, without
    /// appending them; several threads may call it at once for disjoint ranges (after
    /// `beginPositionedWrites()`). `advance(by:)` then appends them.
    public func write(_ bytes: UnsafeRawBufferPointer, atTensorOffset offset: Int) throws(SafeTensorsError) {
        guard offset >= 0, offset + bytes.count <= remaining else {
            throw .writeSizeMismatch(file: file.destination, tensor: info.name, expected: info.byteCount, written: written + offset + bytes.count)
        }
        do { try file.write(bytes, atEndOffset: offset) } catch { throw .system(error) }
    }

    /// Appends the next `count` bytes, written before by `write(_:atTensorOffset:)`.
    public func advance(by count: Int) throws(SafeTensorsError) {
        guard count <= remaining else {
            throw .writeSizeMismatch(file: file.destination, tensor: info.name, expected: info.byteCount, written: written + count)
        }
        do { try file.advance(by: count) } catch { throw .system(error) }
        written += count
    }

    /// Appends raw bytes from an array.
    public func write(_ bytes: [UInt8]) throws(SafeTensorsError) {
        try bytes.withUnsafeBytes { raw in Result { () throws(SafeTensorsError) in try write(raw) } }.get()
    }

    /// Encodes `values` in the tensor's dtype and appends them; returns what was clamped.
    @discardableResult
    public func write(floats values: UnsafeBufferPointer<Float>) throws(SafeTensorsError) -> ConversionReport {
        guard FloatCodec.canEncode(info.dtype) else {
            throw .conversion(file: file.destination, tensor: info.name, reason: "cannot write numbers as \(info.dtype.rawValue)")
        }
        var report = ConversionReport()
        let perChunk = max(8, file.regionCapacity * 8 / info.dtype.bits / 8 * 8 / 2)
        var done = 0
        while done < values.count {
            let n = min(perChunk, values.count - done)
            guard let bytes = info.dtype.byteCount(elements: n) else {
                throw .conversion(file: file.destination, tensor: info.name, reason: "\(n) values do not fill whole bytes")
            }
            guard bytes <= remaining else {
                throw .writeSizeMismatch(file: file.destination, tensor: info.name, expected: info.byteCount, written: written + bytes)
            }
            let slice = UnsafeBufferPointer(rebasing: values[done..<(done + n)])
            do {
                try file.withWritableRegion(count: bytes) { region in
                    report.merge(FloatCodec.encode(info.dtype, from: slice, into: region))
                }
            } catch { throw .system(error) }
            written += bytes
            done += n
        }
        return report
    }

    /// Encodes an array of values in the tensor's dtype and appends them.
    @discardableResult
    public func write(floats values: [Float]) throws(SafeTensorsError) -> ConversionReport {
        try values.withUnsafeBufferPointer { b in Result { () throws(SafeTensorsError) in try write(floats: b) } }.get()
    }

    /// Converts `count` elements held as `dtype` in `raw` to this tensor's dtype and appends
    /// them, in bounded chunks.
    @discardableResult
    public func write(converting raw: UnsafeRawBufferPointer, from dtype: DType, count: Int) throws(SafeTensorsError) -> ConversionReport {
        if dtype == info.dtype {
            try write(raw)
            return ConversionReport()
        }
        guard FloatCodec.canDecode(dtype), FloatCodec.canEncode(info.dtype) else {
            throw .conversion(file: file.destination, tensor: info.name, reason: "cannot convert \(dtype.rawValue) to \(info.dtype.rawValue)")
        }
        var report = ConversionReport()
        // Chunks of 2^20 elements start on byte boundaries for every element width.
        let chunk = 1 << 20
        var done = 0
        while done < count {
            let n = min(chunk, count - done)
            let inStart = done * dtype.bits / 8
            let outBytes = (n * info.dtype.bits + 7) / 8
            guard outBytes <= remaining else {
                throw .writeSizeMismatch(file: file.destination, tensor: info.name, expected: info.byteCount, written: written + outBytes)
            }
            do {
                try file.withWritableRegion(count: outBytes) { region in
                    report.merge(FloatCodec.convert(count: n, from: dtype, UnsafeRawBufferPointer(rebasing: raw[inStart...]), to: info.dtype, region))
                }
            } catch { throw .system(error) }
            written += outBytes
            done += n
        }
        return report
    }
}

/// Writes safetensors files tensor by tensor, never holding more than one tensor's worth of
/// conversion buffer: the header is computed from the descriptions, then `produce` is called once
/// per tensor, in file order, to stream its bytes. The file appears atomically (see `AtomicFile`).
public enum SafeTensorsWriter {
    /// Writes `specs` to `path`. `produce(sink)` must write exactly the tensor's bytes.
    /// `progress(bytesDone, bytesTotal)` is called after each tensor.
    public static func write(to path: String, specs: [TensorSpec], metadata: [String: String]? = nil,
                             progress: ((Int, Int) -> Void)? = nil,
                             produce: (TensorSink) throws -> Void) throws {
        let layout = try SafeTensorsLayout(specs: specs, metadata: metadata, file: path)
        try write(to: path, layout: layout, progress: progress, produce: produce)
    }

    /// Writes a file whose layout was planned beforehand.
    public static func write(to path: String, layout: SafeTensorsLayout,
                             progress: ((Int, Int) -> Void)? = nil,
                             produce: (TensorSink) throws -> Void) throws {
        let file: AtomicFile
        do { file = try AtomicFile(destination: path) } catch { throw SafeTensorsError.system(error) }
        do {
            do { try file.preallocate(layout.totalSize) } catch { throw SafeTensorsError.system(error) }
            do { try file.write(layout.headerBytes) } catch { throw SafeTensorsError.system(error) }
            for info in layout.tensors {
                let sink = TensorSink(info: info, file: file)
                try produce(sink)
                if sink.written != info.byteCount {
                    throw SafeTensorsError.writeSizeMismatch(file: path, tensor: info.name, expected: info.byteCount, written: sink.written)
                }
                progress?(file.bytesWritten, layout.totalSize)
            }
            do { try file.commit() } catch { throw SafeTensorsError.system(error) }
        } catch {
            file.abandon()
            throw error
        }
    }

    /// Writes in-memory tensors (name → (dtype, shape, bytes)); for small files and tests.
    public static func write(to path: String, tensors: [(spec: TensorSpec, bytes: [UInt8])], metadata: [String: String]? = nil) throws {
        var byName: [String: [UInt8]] = [:]
        for t in tensors { byName[t.spec.name] = t.bytes }
        try write(to: path, specs: tensors.map(\.spec), metadata: metadata) { sink in
            try sink.write(byName[sink.info.name] ?? [])
        }
    }

    /// Serializes in-memory tensors to bytes, exactly as they would be written to a file.
    public static func serialize(tensors: [(spec: TensorSpec, bytes: [UInt8])], metadata: [String: String]? = nil) throws(SafeTensorsError) -> [UInt8] {
        let layout = try SafeTensorsLayout(specs: tensors.map(\.spec), metadata: metadata)
        var byName: [String: [UInt8]] = [:]
        for t in tensors { byName[t.spec.name] = t.bytes }
        var out = layout.headerBytes
        for info in layout.tensors {
            let bytes = byName[info.name] ?? []
            guard bytes.count == info.byteCount else {
                throw .writeSizeMismatch(file: "<memory>", tensor: info.name, expected: info.byteCount, written: bytes.count)
            }
            out.append(contentsOf: bytes)
        }
        return out
    }
}
