//! Regenerate the seed corpora in `corpus/wire` and `corpus/node`:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus`.
//!
//! wire: a few valid messages of every type built from fixed bytes, the
//! messages real nodes transmitted while running the node seeds, and a few
//! malformed ones. node: hand-written programs (cluster start, mounts,
//! recovery, restarts, made-up messages) and fixed pseudo-random ones.

use cohort_fuzz::{build_message, encode_vec, run, Hints, Rd, Sim, KINDS};

use cohort_core::ids::{Incarnation, NodeId};
use cohort_core::wire::{decode, MAX_MESSAGE};
use cohort_fuzz::VS_PROGRAM;
use cohort_vs::craft::{self, Kind};
use std::collections::BTreeSet;
use std::path::Path;

/// The test kit's RNG (`cohort_core::rng`, fixed seeds).
struct Rng(cohort_core::rng::Rng);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(cohort_core::rng::Rng::new(seed))
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.0.fill(&mut v);
        v
    }
}

/// Node program steps (see `cohort_fuzz::node` for the encoding).
const B: u8 = 0x80; // to the second node
const ALL: u8 = 0x40; // to every node
const MCAST: u8 = 0x20; // built message: multicast

/// A node set from a mask over ids 1..=8 (the second byte: no large id).
fn set(mask: u8) -> [u8; 2] {
    [mask, 1]
}
fn ring(to: u8, advance: bool, mask: u8) -> Vec<u8> {
    [vec![to, u8::from(advance)], set(mask).to_vec()].concat()
}
fn quorum(to: u8, quorate: bool, mask: u8) -> Vec<u8> {
    // The current ring.
    [vec![2 | to, 0, u8::from(quorate)], set(mask).to_vec()].concat()
}
/// Reasons: 1 Join, 2 Leave, 3 NodeDown, 4 NodeUp, 5 ProcDown.
fn confchg(to: u8, mask: u8, joined: &[(u8, u8)], left: &[(u8, u8)]) -> Vec<u8> {
    let mut v = vec![1 | to];
    v.extend_from_slice(&set(mask));
    for l in [joined, left] {
        v.push(l.len() as u8);
        for (node, reason) in l {
            v.extend_from_slice(&[node - 1, reason - 1]);
        }
    }
    v
}
/// fs: 0 fs1, 1 fs2, 2 fs3; mode: 0 rw, 1 ro, 2 spectator.
fn mount(to: u8, fs: u8, mode: u8, journals: u8) -> Vec<u8> {
    vec![9 | to, fs, 0, mode, 1, 1, journals - 1]
}
/// Mount rw (4 journals) a filesystem named by indices into the fuzz
/// crate's name alphabet (0 = 'a').
fn mount_named(to: u8, name: &[u8]) -> Vec<u8> {
    [vec![9 | to, 3, name.len() as u8 - 1], name.to_vec(), vec![0, 0, 1, 1, 3]].concat()
}
fn unmount(to: u8, fs: u8) -> Vec<u8> {
    vec![9 | to, fs, 2]
}
fn remount(to: u8, fs: u8, mode: u8) -> Vec<u8> {
    vec![9 | to, fs, 3, mode]
}
/// Answer the oldest fence request.
fn fenced(ok: bool) -> Vec<u8> {
    vec![6, 0, u8::from(ok)]
}
/// Answer the oldest kernel operation.
fn kernel(ok: bool) -> Vec<u8> {
    vec![7, 0, if ok { 1 } else { 0 }]
}
fn later(ms10: u16) -> Vec<u8> {
    let [a, b] = ms10.to_le_bytes();
    vec![10, a, b, 11]
}
const AUTO: u8 = 12;
const RESTART: u8 = 15;

fn programs() -> Vec<(String, Vec<u8>)> {
    let cat = |parts: &[Vec<u8>]| -> Vec<u8> { parts.concat() };
    // Node 2 is lost: NodeDown, new ring without it, quorum (both sides
    // think they are quorate: a two-node cluster).
    let split = cat(&[
        confchg(0, 0b01, &[], &[(2, 3)]),
        confchg(B, 0b10, &[], &[(1, 3)]),
        ring(ALL, true, 0b00),
        ring(0, false, 0b01),
        ring(B, false, 0b10),
        quorum(0, true, 0b01),
        quorum(B, true, 0b10),
    ]);
    let merge = cat(&[
        confchg(0, 0b11, &[(2, 4)], &[]),
        confchg(B, 0b11, &[(1, 4)], &[]),
        ring(ALL, true, 0b11),
        quorum(ALL, true, 0b11),
    ]);
    let mut p: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("solo-start".into(), vec![0]),
        ("pair-start".into(), vec![1]),
        ("pair-fs1".into(), vec![5]),
        // One node by hand: ring, quorum, its own join, then a mount.
        (
            "solo-by-hand".into(),
            cat(&[
                vec![0],
                ring(0, false, 0b1),
                quorum(0, true, 0b1),
                confchg(0, 0b1, &[(1, 1)], &[]),
                mount(0, 0, 0, 3),
                vec![AUTO],
            ]),
        ),
        ("pair-mount-both".into(), cat(&[vec![1], mount(0, 0, 0, 3), vec![AUTO], mount(B, 0, 0, 3), vec![AUTO]])),
        ("pair-mount-ro".into(), cat(&[vec![1], mount(0, 1, 0, 3), vec![AUTO], mount(B, 1, 1, 3), vec![AUTO]])),
        ("pair-spectator".into(), cat(&[vec![5], mount(B, 1, 0, 3), vec![AUTO], mount(0, 1, 2, 3), vec![AUTO]])),
        ("pair-unmount".into(), cat(&[vec![5], unmount(B, 0), vec![AUTO], unmount(0, 0), vec![AUTO]])),
        ("pair-remount".into(), cat(&[vec![5], remount(B, 0, 1), vec![AUTO], remount(B, 0, 0), vec![AUTO]])),
        // Node 2 fails while mounted: fenced, its journal recovered.
        (
            "pair-node-down".into(),
            cat(&[vec![5], confchg(0, 0b01, &[], &[(2, 3)]), ring(0, true, 0b01), quorum(0, true, 0b01), vec![AUTO]]),
        ),
        // The same, with the fence and recovery failing first.
        (
            "pair-fence-fail".into(),
            cat(&[
                vec![5],
                confchg(0, 0b01, &[], &[(2, 3)]),
                ring(0, true, 0b01),
                quorum(0, true, 0b01),
                fenced(false),
                later(200),
                fenced(true),
                kernel(false),
                later(200),
                vec![AUTO],
            ]),
        ),
        // Node 2's daemon dies (ProcDown) and restarts.
        (
            "pair-procdown".into(),
            cat(&[
                vec![5],
                confchg(0, 0b01, &[], &[(2, 5)]),
                vec![AUTO, RESTART | B],
                ring(B, false, 0b11),
                quorum(B, true, 0b11),
                confchg(ALL, 0b11, &[(2, 1)], &[]),
                vec![AUTO],
                mount(B, 0, 0, 3),
                vec![AUTO],
            ]),
        ),
        // A clean leave and rejoin.
        (
            "pair-leave".into(),
            cat(&[
                vec![5],
                unmount(B, 0),
                vec![AUTO],
                confchg(0, 0b01, &[], &[(2, 2)]),
                vec![AUTO, RESTART | B],
                ring(B, false, 0b11),
                quorum(B, true, 0b11),
                confchg(ALL, 0b11, &[(2, 1)], &[]),
                vec![AUTO],
            ]),
        ),
        // Split with fencing held, then merge: a stateful merge.
        ("pair-split-merge".into(), cat(&[vec![5], split.clone(), merge.clone(), vec![AUTO]])),
        ("pair-split-auto-merge".into(), cat(&[vec![5], split.clone(), vec![AUTO], merge, vec![AUTO]])),
        ("pair-split-mount".into(), cat(&[vec![5], split, mount(0, 1, 0, 2), mount(B, 2, 0, 2), vec![AUTO]])),
        // Kernel withdraw and a failed mount.
        ("pair-withdraw".into(), cat(&[vec![5], vec![8, 0, 3, AUTO], vec![8 | B, 0, 3, AUTO]])),
        ("pair-mount-fails".into(), cat(&[vec![1], mount(0, 0, 0, 3), kernel(false), vec![AUTO]])),
        // More filesystems than a node may have groups.
        (
            "pair-too-many".into(),
            cat(&[vec![1], (0..20u8).flat_map(|k| mount_named(ALL, &[6, k])).collect(), vec![AUTO]]),
        ),
    ];
    // Made-up messages of every kind, to one node and multicast.
    for k in 0..KINDS.len() as u8 {
        let mut v = vec![5u8];
        for (j, to) in [0, B, MCAST, ALL].into_iter().enumerate() {
            v.extend_from_slice(&[4 | to, k, j as u8 % 2, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        }
        v.push(AUTO);
        p.push((format!("made-up-{:?}", KINDS[usize::from(k)]).to_lowercase(), v));
    }
    let mut rng = Rng::seeded(0xc04f_5eed);
    for k in 0..8 {
        let mut v = vec![[1u8, 5, 3, 0][k % 4]];
        v.extend(rng.bytes(48 + 24 * k));
        p.push((format!("random-{k}"), v));
    }
    p
}

/// One line per node: what it waits for and its groups.
fn summary(sim: &Sim) -> String {
    let mut out = String::new();
    for n in sim.nodes.iter().flatten() {
        let st = n.status();
        out += &format!(" [{} {:?} {:?}", st.node.0, st.daemon, st.generation);
        for g in st.groups.iter() {
            out += &format!(
                " {}:{}m{}{}",
                g.fs,
                g.members.len(),
                if g.synced { "s" } else { "" },
                if g.blocked { "b" } else { "" }
            );
        }
        out += "]";
    }
    out
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join(name), data).expect("writable");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let (wdir, ndir) = (root.join("wire"), root.join("node"));
    for d in [&wdir, &ndir] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).expect("mkdir");
    }
    // node seeds, recording what the nodes transmit.
    let mut sent: BTreeSet<Vec<u8>> = BTreeSet::new();
    for (name, prog) in programs() {
        write(&ndir, &format!("seed-{name}"), &prog);
        let Some((&flags, rest)) = prog.split_first() else { continue };
        let mut sim = Sim::new(flags & 3 != 0);
        sim.transmitted = Some(Vec::new());
        run(&mut sim, flags, &mut Rd::new(rest));
        println!("{name:24}{}", summary(&sim));
        sent.extend(sim.transmitted.take().unwrap_or_default());
    }
    // wire: built messages of every kind.
    let mut rng = Rng::seeded(0x3173_c0de);
    for (k, kind) in KINDS.iter().enumerate() {
        for j in 0..2 {
            let mut raw = vec![k as u8];
            raw.extend(rng.bytes(200));
            let m = build_message(&mut Rd::new(&raw), &Hints::default());
            assert_eq!(m.header.kind, *kind);
            write(&wdir, &format!("seed-{kind:?}-{j}").to_lowercase(), &encode_vec(&m));
        }
    }
    // wire: real transmissions, a few of every kind.
    let mut per_kind = std::collections::BTreeMap::new();
    for bytes in sent {
        let kind = decode(&bytes).expect("transmitted messages decode").header.kind;
        let n = per_kind.entry(format!("{kind:?}").to_lowercase()).or_insert(0usize);
        if *n < 3 {
            write(&wdir, &format!("sent-{}-{n}", format!("{kind:?}").to_lowercase()), &bytes);
            *n += 1;
        }
    }
    // wire: malformed.
    write(&wdir, "bad-empty", &[]);
    write(&wdir, "bad-short", b"CH\x01\x01");
    write(&wdir, "bad-magic", &[0u8; 40]);
    write(&wdir, "bad-oversize", &vec![0x43; MAX_MESSAGE + 1]);
    let mut unknown = b"CH\x01\xff\x01\x00\x00\x00".to_vec();
    unknown.extend_from_slice(&[0; 24]);
    write(&wdir, "bad-type", &unknown);
    vs_seeds(&wdir, &ndir);
    let count = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    println!("corpus/wire: {} files, corpus/node: {} files", count(&wdir), count(&ndir));
}

/// Seeds for the core's VS transport (issue 15): plaintexts naming view
/// seqs near the end of the space (wire), and programs in which a key
/// holder sends them, and replays them, into a running three-node group
/// (node; see `cohort_fuzz::vs_node` for the encoding).
fn vs_seeds(wdir: &Path, ndir: &Path) {
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let mut buf = [0u8; craft::MAX_FRAMES];
    for kind in Kind::ALL {
        let name = format!("{kind:?}").to_lowercase();
        for (tag, view) in [("u64max", u64::MAX), ("u32max", u64::from(u32::MAX) << 32 | 1), ("small", 3)] {
            let n = craft::frame(kind, view, NodeId(1), Incarnation(7), &members, &mut buf).expect("fits");
            write(wdir, &format!("vs-{name}-{tag}"), &buf[..n]);
        }
    }
    let n = craft::propose(2, &[(NodeId(1), Incarnation(7)), (NodeId(4), Incarnation(1))], &mut buf).expect("fits");
    write(wdir, "vs-propose", &buf[..n]);
    // node: [VS_PROGRAM, steps...]. Step 1 = templated frame: inc, counter
    // (< 200: a fresh one), receiver, kind, k, selector (0: u64::MAX - k,
    // 1: k past the jump bound, 2: k past the receiver's seq, 3: 8 raw
    // bytes). Step 2 = wait (ms). Step 3 = a node broadcasts.
    for (ki, kind) in Kind::ALL.iter().enumerate() {
        let name = format!("{kind:?}").to_lowercase();
        let mut p = vec![VS_PROGRAM];
        for to in 0..3u8 {
            for sel in [0u8, 1] {
                p.extend_from_slice(&[1, 1, 0, to, ki as u8, 5, sel]);
                // The same datagram again (counter not advanced): a replay.
                p.extend_from_slice(&[1, 1, 250, to, ki as u8, 5, sel]);
            }
            p.extend_from_slice(&[3, to, 2, 30]);
        }
        p.extend_from_slice(&[2, 200, 3, 0, 3, 1, 3, 2, 2, 100]);
        write(ndir, &format!("seed-vs-{name}-near-max"), &p);
    }
    // Raw plaintext, from the wire seeds: a heartbeat at u64::MAX, then
    // in-range frames of node 4 (it becomes alive, is never a member).
    let mut p = vec![VS_PROGRAM];
    let n = craft::frame(Kind::Heartbeat, u64::MAX, NodeId(4), Incarnation(1), &members, &mut buf).expect("fits");
    p.extend_from_slice(&[0, 1, 0, 0, n.div_ceil(4) as u8]);
    p.extend_from_slice(&buf[..n]);
    p.resize(p.len() + (4 - n % 4) % 4, 0);
    p.extend_from_slice(&[2, 50]);
    for sel in [2u8, 2, 3] {
        p.extend_from_slice(&[1, 2, 0, 1, 0, 1, sel]);
        if sel == 3 {
            p.extend_from_slice(&u64::MAX.to_le_bytes());
        }
    }
    p.extend_from_slice(&[2, 250, 2, 250, 3, 0, 3, 1]);
    write(ndir, "seed-vs-raw-and-in-range", &p);
}
