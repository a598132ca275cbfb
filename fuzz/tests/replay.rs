//! Stable-Rust replay of the fuzz harnesses, so CI exercises them without
//! nightly or libFuzzer: every checked-in corpus file, then seeded
//! pseudo-random inputs (raw, and mutations of the corpus).
//!
//! `REPLAY_ITERS=N` changes the number of pseudo-random inputs per test
//! (default 2000); each test prints its inputs/s (`--nocapture`).

use cohort_core::wire::{decode, MsgKind, HEADER_LEN, MAX_MESSAGE};
use cohort_fuzz::{build_message, encode_vec, node, tolerate_known, wire, Hints, Rd, KINDS};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The test kit's RNG (`cohort_core::rng`, fixed seeds) with the byte
/// helpers these inputs need.
struct Rng(cohort_core::rng::Rng);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(cohort_core::rng::Rng::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Flip, overwrite, insert, delete, truncate or extend a few bytes.
    fn mutate(&mut self, mut v: Vec<u8>) -> Vec<u8> {
        for _ in 0..1 + self.below(4) {
            match self.below(6) {
                0 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] ^= 1 << self.below(8);
                }
                1 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v[i] = self.next() as u8;
                }
                2 => {
                    let i = self.below(v.len() + 1);
                    v.insert(i, self.next() as u8);
                }
                3 if !v.is_empty() => {
                    let i = self.below(v.len());
                    v.remove(i);
                }
                4 => {
                    let n = self.below(v.len() + 1);
                    v.truncate(n);
                }
                _ => {
                    let n = self.below(16);
                    let extra = self.bytes(n);
                    v.extend_from_slice(&extra);
                }
            }
        }
        v
    }
}

fn iters() -> usize {
    std::env::var("REPLAY_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("readable"))).collect()
}

/// Run `f` on every input; known core panics are counted, any other
/// panic names the input.
fn run_all(what: &str, f: fn(&[u8]), inputs: impl IntoIterator<Item = (String, Vec<u8>)>) -> usize {
    let t = Instant::now();
    let (mut n, mut known) = (0usize, 0usize);
    for (name, data) in inputs {
        n += 1;
        let r = std::panic::catch_unwind(|| tolerate_known(|| f(&data)));
        match r {
            Ok(Some(())) => {}
            Ok(None) => known += 1,
            Err(p) => {
                eprintln!("{what}: input {name} panicked ({} bytes): {:02x?}", data.len(), data);
                std::panic::resume_unwind(p);
            }
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!("{what}: {n} inputs in {s:.2} s ({:.0} inputs/s), {known} hit known core panics", n as f64 / s);
    n
}

#[test]
fn wire_corpus_replays() {
    let files = corpus("wire");
    assert!(files.len() >= 24, "the wire corpus shrank to {} files", files.len());
    // It holds a valid message of every type.
    let kinds: Vec<MsgKind> = files.iter().filter_map(|(_, d)| decode(d).ok()).map(|m| m.header.kind).collect();
    for k in KINDS {
        assert!(
            kinds.contains(&k),
            "no valid {k:?} in corpus/wire (after a wire format change: \
             cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus)"
        );
    }
    let named = files.into_iter().map(|(p, d)| (p.display().to_string(), d));
    run_all("wire corpus", wire, named);
}

#[test]
fn node_corpus_replays() {
    let files = corpus("node");
    assert!(files.len() >= 24, "the node corpus shrank to {} files", files.len());
    let named = files.into_iter().map(|(p, d)| (p.display().to_string(), d));
    run_all("node corpus", node, named);
}

#[test]
fn wire_random_inputs() {
    let seeds: Vec<Vec<u8>> = corpus("wire").into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng::seeded(0x5eed_0fc0_4f17);
    let inputs: Vec<(String, Vec<u8>)> = (0..iters())
        .map(|k| {
            let data = match k % 5 {
                // Raw bytes, now and then longer than any message.
                0 => {
                    let n = if rng.below(16) == 0 { rng.below(5000) } else { rng.below(300) };
                    rng.bytes(n)
                }
                // A well-formed header over a random body.
                1 => {
                    let mut v = vec![b'C', b'H', 1, 1 + rng.below(14) as u8];
                    v.extend_from_slice(&(1 + rng.below(8) as u32).to_le_bytes());
                    v.extend(rng.bytes(HEADER_LEN - 8));
                    if rng.below(2) == 0 {
                        v[28..32].copy_from_slice(&[0; 4]);
                    }
                    let n = rng.below(200);
                    v.extend(rng.bytes(n));
                    v
                }
                // A freshly built valid message, mutated or not.
                2 => {
                    let raw = rng.bytes(256);
                    let m = build_message(&mut Rd::new(&raw), &Hints::default());
                    let v = encode_vec(&m);
                    if rng.below(4) == 0 {
                        v
                    } else {
                        rng.mutate(v)
                    }
                }
                // A mutated corpus file.
                _ => {
                    let s = seeds[rng.below(seeds.len())].clone();
                    rng.mutate(s)
                }
            };
            (format!("random #{k}"), data)
        })
        .collect();
    run_all("wire random", wire, inputs);
    // The boundaries, once.
    wire(&[]);
    wire(&vec![0; MAX_MESSAGE + 1]);
}

#[test]
fn node_random_inputs() {
    let seeds: Vec<Vec<u8>> = corpus("node").into_iter().map(|(_, d)| d).collect();
    let mut rng = Rng::seeded(0x0dd_ba11_c0de);
    let inputs: Vec<(String, Vec<u8>)> = (0..iters())
        .map(|k| {
            let data = if k % 2 == 0 {
                // A random program, mostly on a formed two-node cluster.
                let mut v = vec![[1u8, 3, 5, 7, 0, 2][rng.below(6)]];
                let n = rng.below(160);
                v.extend(rng.bytes(n));
                v
            } else {
                let s = seeds[rng.below(seeds.len())].clone();
                rng.mutate(s)
            };
            (format!("random #{k}"), data)
        })
        .collect();
    run_all("node random", node, inputs);
}

#[test]
fn cluster_corpus_replays() {
    // Whole simulated clusters (a few hundred ms each in debug): the
    // checked-in corpus holds swarm seeds that once found core bugs.
    let files = corpus("cluster");
    assert!(files.len() >= 8, "the cluster corpus shrank to {} files", files.len());
    for (path, data) in files {
        let r = std::panic::catch_unwind(|| cohort_fuzz::cluster(&data));
        assert!(r.is_ok(), "cluster input {} failed", path.display());
    }
}
