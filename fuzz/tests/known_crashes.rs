//! Every crash input kept under `fuzz/artifacts/<target>/` reproduces a
//! known core bug (tests/CORE_BUGS.md, the FUZZ-n entries). Ignored while
//! those bugs exist; passes once they are fixed (then the inputs can move
//! into the corpus):
//!
//! `cargo test --manifest-path fuzz/Cargo.toml --test known_crashes -- --ignored`
//!
//! Its own test binary: it turns the known-panic tolerance off for the
//! whole process.

use std::path::Path;

#[test]
fn artifacts_no_longer_crash() {
    cohort_fuzz::set_strict(true);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    let (mut n, mut crashed) = (0, Vec::new());
    for (target, f) in [("wire", cohort_fuzz::wire as fn(&[u8])), ("node", cohort_fuzz::node)] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else { continue };
        let mut files: Vec<_> = dir.map(|e| e.expect("dir entry").path()).collect();
        files.sort();
        for p in files {
            let data = std::fs::read(&p).expect("readable");
            n += 1;
            if std::panic::catch_unwind(|| f(&data)).is_err() {
                crashed.push(format!("{target}: {}", p.display()));
            }
        }
    }
    assert!(crashed.is_empty(), "{} of {n} artifacts still crash:\n{}", crashed.len(), crashed.join("\n"));
}
