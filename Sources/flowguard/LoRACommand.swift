import ArgumentParser

/// `flowguard lora`: the adapter commands. Each subcommand is a call into the LoRA library.
struct LoRACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora",
        abstract: "Inspect, convert, merge, extract and archive LoRA adapters (PEFT, diffusers, kohya, ComfyUI, XLabs).",
        subcommands: [LoRAInspect.self, LoRAConvert.self, LoRAMergeCommand.self, LoRAExtractCommand.self, LoRAPack.self, LoRAUnpack.self]
    )
}
