//! Counter-based randomness: every random choice is a pure function of (seed, stream, index),
//! so results do not depend on thread count or order of work.

/// Stream ids: each kind of random choice draws from its own stream.
pub(crate) mod stream {
    /// Class-wise split shuffles.
    pub const SPLIT: u64 = 1;
    /// Augmentation offsets and flips.
    pub const AUGMENT: u64 = 2;
    /// Batch order.
    pub const BATCH: u64 = 3;
    /// Corruption noise.
    pub const NOISE: u64 = 4;
    /// Synthetic class prototypes.
    pub const PROTOTYPE: u64 = 5;
    /// Synthetic images.
    pub const SYNTHETIC: u64 = 6;
}

/// SplitMix64's finalizer: a bijective 64-bit mix.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit key from a seed and up to three counters.
pub fn key(seed: u64, a: u64, b: u64, c: u64) -> u64 {
    splitmix(splitmix(splitmix(splitmix(seed) ^ a) ^ b) ^ c)
}

/// A small deterministic generator (SplitMix64 stream) started from a [`key`].
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for the stream (seed, a, b, c).
    pub fn new(seed: u64, a: u64, b: u64, c: u64) -> Self {
        Self(key(seed, a, b, c))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n ≥ 1), without modulo bias worth noticing (128-bit multiply).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Shuffles `v` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}
