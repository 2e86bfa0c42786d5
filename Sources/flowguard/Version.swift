/// The version of FlowGuard, defined here only: `flowguard --version` prints `text`.
enum FlowGuardVersion {
    /// The release number (semantic versioning).
    static let number = "0.1.0"
    /// What `flowguard --version` prints.
    static let text = "flowguard \(number)"
}
