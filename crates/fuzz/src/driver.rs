//! A small mutational fuzzer on stable Rust, with no instrumentation: the CI smoke
//! pass, and a fallback where libFuzzer cannot be built.
//!
//! It starts from a target's seeds and applies stacks of the usual byte-level
//! mutations (bit flips, interesting values, inserted, erased, copied and spliced
//! ranges). Without coverage feedback it finds only shallow bugs; the campaigns
//! that count are the coverage-guided ones (`scripts/fuzz.sh`). Deterministic for
//! a given seed, so a failure in CI is reproduced by rerunning the test.

use std::panic::{self, AssertUnwindSafe};

use crate::Target;

/// A failing input and what the target said.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The input.
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
    /// Executions before it (this one included).
    pub executions: u64,
}

/// splitmix64: small, fast, and good enough to choose mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xfff,
    0x1000,
    0xffff,
    0x10000,
    0x10_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX - 0xfff,
    u64::MAX,
];

/// Applies one to eight mutations to `data`, splicing from `pool`; keeps it at
/// most `max_len` bytes.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], max_len: usize) {
    let count = 1 + rng.below(8);
    for _ in 0..count {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let at = rng.below(len);
                data[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                data[at] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let width = [1, 2, 4, 8][rng.below(4)];
                let at = rng.below(len);
                let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let end = (at + width).min(len);
                data[at..end].copy_from_slice(&value[..end - at]);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let delta = (rng.below(33) as u8).wrapping_sub(16);
                data[at] = data[at].wrapping_add(delta);
            }
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let byte = rng.next_u64() as u8;
                data.splice(at..at, std::iter::repeat_n(byte, n));
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                data.drain(at..at + n);
            }
            6 if len > 1 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(64));
                let to = rng.below(len);
                let chunk = data[from..from + n].to_vec();
                let end = (to + n).min(len);
                data[to..end].copy_from_slice(&chunk[..end - to]);
            }
            7 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(256));
                    let at = rng.below(len + 1);
                    data.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            8 if len > 0 => data.truncate(rng.below(len)),
            _ => {}
        }
    }
    data.truncate(max_len);
}

/// Runs `target` on each of its seeds, then on `executions` mutations of them
/// (seeded by `seed`); the first input that panics is returned as a [`Crash`].
/// Returns the number of executions run.
pub fn run(target: &Target, executions: u64, seed: u64) -> Result<u64, Crash> {
    let seeds = (target.seeds)();
    let mut done = 0;
    let mut rng = Rng::new(seed);
    let one = |input: &[u8], done: &mut u64| -> Result<(), Crash> {
        *done += 1;
        panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|payload| {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic with no message".to_owned());
            Crash {
                input: input.to_vec(),
                message,
                executions: *done,
            }
        })
    };
    for input in &seeds {
        one(input, &mut done)?;
    }
    let max_len = seeds.iter().map(Vec::len).max().unwrap_or(0).max(64) * 2;
    let mut data = Vec::new();
    while done < executions + seeds.len() as u64 {
        // Mostly mutate a seed afresh; sometimes keep stacking on the last input,
        // which walks further from the seeds.
        if seeds.is_empty() || rng.below(4) != 0 {
            data = seeds
                .get(rng.below(seeds.len()))
                .cloned()
                .unwrap_or_default();
        }
        mutate(&mut rng, &mut data, &seeds, max_len);
        one(&data, &mut done)?;
    }
    Ok(done)
}
