import TestSupport
import Foundation
import Testing
import FlowMatching

/// The seeded normal generator: determinism, state round trip and distribution.
@Suite struct GaussianGeneratorTests {
    @Test func sameSeedSameStreamDifferentSeedDifferentStream() {
        var a = GaussianGenerator(seed: 42), b = GaussianGenerator(seed: 42), c = GaussianGenerator(seed: 43)
        let xa = (0..<16).map { _ in a.next() }, xb = (0..<16).map { _ in b.next() }, xc = (0..<16).map { _ in c.next() }
        #expect(xa == xb)
        #expect(xa != xc)
    }

    @Test func stateRoundTripsMidStream() throws {
        var generator = GaussianGenerator(seed: 0xDEAD_BEEF)
        _ = generator.tensor(shape: [3, 7])
        let saved = generator.state
        #expect(saved == [0xDEAD_BEEF, 21])
        let expected = (0..<10).map { _ in generator.next() }
        var restored = try #require(GaussianGenerator(state: saved))
        #expect((0..<10).map { _ in restored.next() } == expected)
        #expect(restored == generator)
        #expect(GaussianGenerator(state: [1]) == nil)
    }

    @Test func tensorFillsRowMajorFromTheStream() {
        var a = GaussianGenerator(seed: 5), b = GaussianGenerator(seed: 5)
        let t = a.tensor(shape: [2, 3])
        #expect(t.shape == [2, 3])
        #expect(t.scalars == (0..<6).map { _ in Float(b.next()) })
    }

    @Test func looksStandardNormal() {
        var generator = GaussianGenerator(seed: 1)
        let n = 200_000
        var sum = 0.0, sq = 0.0, beyond2 = 0
        for _ in 0..<n {
            let x = generator.next()
            sum += x
            sq += x * x
            if abs(x) > 2 { beyond2 += 1 }
        }
        let mean = sum / Double(n), variance = sq / Double(n) - mean * mean
        #expect(abs(mean) < 0.01)
        #expect(abs(variance - 1) < 0.01)
        // P(|X| > 2) = 0.0455.
        #expect(abs(Double(beyond2) / Double(n) - 0.0455) < 0.002)
    }
}
