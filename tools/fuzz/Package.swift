// swift-tools-version:6.0
// libFuzzer targets for FlowGuard's parsers of untrusted files. Built apart from the root package
// (it needs -sanitize=fuzzer,address and -parse-as-library on every module): see README.md and run.sh.
import PackageDescription

let package = Package(
    name: "FlowGuardFuzz",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "FlowGuard", path: "../.."),
    ],
    targets: [
        // What every target shares: libFuzzer's driver as main(), and an in-memory file (memfd)
        // the readers can open by path.
        .target(name: "CFuzzShims", path: "Sources/CFuzzShims"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzShims"], path: "Sources/FuzzSupport"),
        .executableTarget(name: "fuzz-safetensors-header", dependencies: [
            "FuzzSupport",
            .product(name: "SafeTensors", package: "FlowGuard"),
        ]),
        .executableTarget(name: "fuzz-gguf-header", dependencies: [
            "FuzzSupport",
            .product(name: "GGUF", package: "FlowGuard"),
        ]),
        .executableTarget(name: "fuzz-shard-index", dependencies: [
            "FuzzSupport",
            .product(name: "SafeTensors", package: "FlowGuard"),
            .product(name: "JSON", package: "FlowGuard"),
        ]),
        .executableTarget(name: "fuzz-lora-reader", dependencies: [
            "FuzzSupport",
            .product(name: "LoRA", package: "FlowGuard"),
            .product(name: "Checkpoints", package: "FlowGuard"),
            .product(name: "SafeTensors", package: "FlowGuard"),
        ]),
        .executableTarget(name: "fuzz-delta-archive", dependencies: [
            "FuzzSupport",
            .product(name: "DeltaArchive", package: "FlowGuard"),
            .product(name: "SafeTensors", package: "FlowGuard"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
