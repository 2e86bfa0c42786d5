// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "FlowGuard",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "flowguard", targets: ["flowguard"]),
        .library(name: "JSON", targets: ["JSON"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "DeltaArchive", targets: ["DeltaArchive"]),
        .library(name: "GGUF", targets: ["GGUF"]),
        .library(name: "Checkpoints", targets: ["Checkpoints"]),
        .library(name: "LoRA", targets: ["LoRA"]),
        .library(name: "TensorRuntime", targets: ["TensorRuntime"]),
        .library(name: "Transformers", targets: ["Transformers"]),
        .library(name: "FlowMatching", targets: ["FlowMatching"]),
        .library(name: "GRPOGuard", targets: ["GRPOGuard"]),
        .library(name: "RunReports", targets: ["RunReports"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // System libraries: each is wrapped by exactly one Swift file.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CJSONC", pkgConfig: "json-c", providers: [.apt(["libjson-c-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),

        // The one layer over the C library (file descriptors, mmap, atomic files and folders,
        // clocks, threads, processes); every other module imports it instead of Glibc/Darwin.
        .target(name: "SystemSupport"),
        // JSON: the json-c wrapper (the only importer of CJSONC).
        .target(name: "JSON", dependencies: ["CJSONC"]),
        // Parses files downloaded from anywhere: built with checks on (overflow traps, range
        // preconditions) in every configuration, like every module that reads untrusted bytes.
        .target(name: "SafeTensors", dependencies: ["SystemSupport", "JSON", "FloatKernels"]),
        // The bulk float conversions alone (no parsing; sizes checked by SafeTensors' FloatCodec):
        // -Ounchecked lets them vectorise (about 2x less CPU for a bf16 → fp16 convert).
        .target(name: "FloatKernels",
                swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]),
        // Checkpoints owns "open any container" (TensorCollection.checkpoint): it reads GGUF through
        // the tensor source SafeTensors defines, so SafeTensors never imports GGUF.
        .target(name: "Checkpoints", dependencies: ["SystemSupport", "SafeTensors", "GGUF", "JSON"]),
        // The delta archive (.fgdelta) beside the format layer: the only importer of CZstd.
        .target(name: "DeltaArchive", dependencies: ["SystemSupport", "SafeTensors", "JSON", "CZstd"]),
        // GGUF parses untrusted input: built with checks on (no -Ounchecked). It does no I/O
        // (callers hand it the mapped file); SystemSupport only for display escaping.
        .target(name: "GGUF", dependencies: ["SystemSupport", "SafeTensors"]),
        .target(name: "BLAS", dependencies: ["COpenBLAS"]),
        .target(name: "LoRA", dependencies: ["SystemSupport", "SafeTensors", "GGUF", "JSON", "DeltaArchive", "Checkpoints", "BLAS"]),
        // The runtime's kernels are built for the host CPU in release builds (like -march=native):
        // FlowGuard is always built from source on the machine that runs it.
        .target(name: "TensorRuntime", dependencies: ["SystemSupport", "BLAS"],
                swiftSettings: [.unsafeFlags(["-Ounchecked", "-target-cpu", "native"], .when(configuration: .release))]),
        .target(name: "Transformers", dependencies: ["SystemSupport", "TensorRuntime", "Checkpoints", "LoRA", "SafeTensors", "JSON"]),
        .target(name: "FlowMatching", dependencies: ["TensorRuntime"]),
        .target(name: "GRPOGuard", dependencies: ["SystemSupport", "FlowMatching", "Transformers", "TensorRuntime", "Checkpoints", "LoRA",
                                                  "DeltaArchive", "SafeTensors", "JSON"]),
        // The run report (HTML page, SVG plots) read from a run folder the trainer wrote.
        .target(name: "RunReports", dependencies: ["SystemSupport", "GRPOGuard", "SafeTensors", "JSON"]),
        .executableTarget(name: "flowguard", dependencies: [
            "SystemSupport", "JSON", "SafeTensors", "GGUF", "Checkpoints", "DeltaArchive", "LoRA", "TensorRuntime", "Transformers", "FlowMatching",
            "GRPOGuard", "RunReports",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Benchmarks (outside CI): tools/bench/runtime drives this executable.
        .executableTarget(name: "runtime-bench", dependencies: ["TensorRuntime", "Transformers", "Checkpoints", "SafeTensors", "BLAS"],
                          path: "tools/bench/runtime/swift"),
        // The over-optimization study (tools/study/run.sh; docs/study.md).
        .executableTarget(name: "flowguard-study",
                          dependencies: ["GRPOGuard", "RunReports", "FlowMatching", "Transformers", "TensorRuntime", "Checkpoints", "LoRA",
                                         "SafeTensors", "JSON",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "tools/study/swift"),
        .executableTarget(name: "kernel-bench", dependencies: ["TensorRuntime", "BLAS"],
                          path: "tools/bench/kernels",
                          swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]),

        .testTarget(name: "StudyTests", dependencies: ["flowguard-study", "GRPOGuard", "FlowMatching", "SafeTensors", "TestSupport"]),
        .target(name: "TestSupport", dependencies: ["SafeTensors", "TensorRuntime"], path: "Tests/TestSupport"),
        .testTarget(name: "SystemSupportTests", dependencies: ["SystemSupport", "TestSupport"]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors", "SystemSupport", "JSON", "TestSupport"]),
        .testTarget(name: "CheckpointsTests", dependencies: ["Checkpoints", "SafeTensors", "GGUF", "JSON", "TestSupport"]),
        .testTarget(name: "DeltaArchiveTests", dependencies: ["DeltaArchive", "SafeTensors", "SystemSupport", "JSON", "TestSupport"]),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "SafeTensors", "TestSupport"]),
        .testTarget(name: "BLASTests", dependencies: ["BLAS", "TestSupport"]),
        .testTarget(name: "LoRATests", dependencies: ["LoRA", "Checkpoints", "GGUF", "SafeTensors", "BLAS", "TestSupport"]),
        .testTarget(name: "TensorRuntimeTests", dependencies: ["TensorRuntime", "BLAS", "TestSupport"]),
        .testTarget(name: "TransformersTests", dependencies: ["Transformers", "TensorRuntime", "Checkpoints", "GGUF", "LoRA", "SafeTensors", "TestSupport"]),
        .testTarget(name: "FlowMatchingTests", dependencies: ["FlowMatching", "TensorRuntime", "SafeTensors", "TestSupport"]),
        .testTarget(name: "GRPOGuardTests", dependencies: ["GRPOGuard", "FlowMatching", "TensorRuntime", "Transformers", "LoRA", "Checkpoints", "SafeTensors", "JSON", "TestSupport"]),
        .testTarget(name: "RunReportsTests", dependencies: ["RunReports", "GRPOGuard", "TensorRuntime", "SafeTensors", "JSON", "TestSupport"]),
        .testTarget(name: "FlowGuardCLITests", dependencies: ["SafeTensors", "SystemSupport", "TestSupport", "flowguard"]),
    ],
    swiftLanguageModes: [.v6]
)
