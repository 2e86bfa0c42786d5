import JSON
import SafeTensors

extension Architecture {
    /// The architecture described by a diffusers transformer `config.json` (for the built-in
    /// families `SD3Transformer2DModel` or `FluxTransformer2DModel`), for when the weights are not
    /// at hand.
    ///
    /// The family is the one of `families` that claims `_class_name` (or, without it, the first
    /// that claims the unnamed config: FLUX when `num_single_layers` is there). Throws
    /// `CheckpointError.invalidConfig` naming the field that is missing or malformed.
    public init(diffusersConfig json: JSONValue, families: [ModelFamily] = ModelFamily.builtIn) throws(CheckpointError) {
        guard json.objectMembers != nil else { throw .invalidConfig("config.json is not a JSON object") }
        let fields = DiffusersConfigFields(json)
        let family: ModelFamily
        if let className = json["_class_name"]?.stringValue {
            guard let claimed = ModelFamily.claiming(diffusersClassName: className, in: families) else {
                let names = families.map(\.diffusersClassName)
                let expected = names.count == 2 ? "neither \(names[0]) nor \(names[1])"
                                                : "none of " + names.joined(separator: ", ")
                throw .invalidConfig("config.json \"_class_name\" \(className) is \(expected)")
            }
            family = claimed
        } else {
            guard let claimed = families.first(where: { $0.descriptor.claimsUnnamedDiffusersConfig(fields) }) else {
                throw .invalidConfig("config.json has no \"_class_name\"")
            }
            family = claimed
        }
        try self.init(config: try family.descriptor.config(diffusers: fields))
    }
}
