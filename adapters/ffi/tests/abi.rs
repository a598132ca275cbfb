//! The C ABI through its extern functions, as a C host would call them:
//! argument checks first, then two nodes through a mount and a node failure.

use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CStr};
use std::ptr::{null, null_mut};

use cohort_ffi::*;

const FS: *const c_char = c"fs1".as_ptr();

/// Host memory for one node, aligned as asked.
struct Mem {
    buf: Vec<u64>,
}

impl Mem {
    fn new() -> Mem {
        assert!(cohort_node_align() <= 8);
        Mem { buf: vec![0u64; cohort_node_size().div_ceil(8) + 1] }
    }

    fn ptr(&mut self) -> *mut c_void {
        self.buf.as_mut_ptr().cast()
    }

    fn size(&self) -> usize {
        self.buf.len() * 8
    }

    fn node(&mut self) -> *mut CohortNode {
        self.ptr().cast()
    }
}

fn init(mem: &mut Mem, id: u32, inc: u64) -> *mut CohortNode {
    let (p, size) = (mem.ptr(), mem.size());
    assert_eq!(unsafe { cohort_node_init(p, size, id, inc) }, CohortResult::Ok);
    mem.node()
}

fn zero_effect() -> CohortEffect {
    // All-zero is a valid CohortEffect (every enum has a 0 variant).
    unsafe { std::mem::zeroed() }
}

#[test]
fn null_misaligned_and_short_arguments_are_rejected() {
    let mut mem = Mem::new();
    let size = mem.size();
    let base = mem.ptr();
    unsafe {
        assert_eq!(cohort_node_init(null_mut(), size, 1, 1), CohortResult::ErrNull);
        assert_eq!(cohort_node_init(base.cast::<u8>().add(1).cast(), size - 8, 1, 1), CohortResult::ErrMisaligned);
        assert_eq!(cohort_node_init(base, cohort_node_size() - 1, 1, 1), CohortResult::ErrBufferTooSmall);
        assert_eq!(cohort_node_init(base, size, 0, 1), CohortResult::ErrInvalidArgument, "node id 0");
        assert_eq!(cohort_node_init_with(base, size, null()), CohortResult::ErrNull);

        // Never initialised: refused, not read as a node.
        let node = mem.node();
        assert_eq!(cohort_handle_timer(node, 0, 1), CohortResult::ErrNotInitialized);
        assert_eq!(cohort_handle_timer(null_mut(), 0, 1), CohortResult::ErrNull);
        assert_eq!(cohort_handle_timer(node.cast::<u8>().add(4).cast(), 0, 1), CohortResult::ErrMisaligned);

        let node = init(&mut mem, 1, 1);
        let mut e = zero_effect();
        assert_eq!(cohort_poll_effect(node, null_mut()), CohortResult::ErrNull);
        assert_eq!(cohort_poll_effect(null_mut(), &mut e), CohortResult::ErrNull);
        let mut raw = [0u64; 16];
        let misaligned_effect = raw.as_mut_ptr().cast::<u8>().add(1).cast::<CohortEffect>();
        assert_eq!(cohort_poll_effect(node, misaligned_effect), CohortResult::ErrMisaligned);
        assert_eq!(cohort_poll_effect(node, &mut e), CohortResult::Empty);
        assert_eq!(e.kind, CohortEffectKind::None);

        let mut buf = vec![0u8; COHORT_MAX_MESSAGE];
        let mut len = 0usize;
        assert_eq!(cohort_poll_transmit(node, null_mut(), buf.len(), &mut len), CohortResult::ErrNull);
        assert_eq!(cohort_poll_transmit(node, buf.as_mut_ptr(), buf.len(), null_mut()), CohortResult::ErrNull);
        assert_eq!(cohort_poll_transmit(node, buf.as_mut_ptr(), 100, &mut len), CohortResult::ErrBufferTooSmall);
        let misaligned_len = raw.as_mut_ptr().cast::<u8>().add(3).cast::<usize>();
        assert_eq!(
            cohort_poll_transmit(node, buf.as_mut_ptr(), buf.len(), misaligned_len),
            CohortResult::ErrMisaligned
        );
        assert_eq!(cohort_poll_transmit(node, buf.as_mut_ptr(), buf.len(), &mut len), CohortResult::Empty);

        assert_eq!(cohort_status(node, null_mut()), CohortResult::ErrNull);

        // Lists: NULL with entries, too many entries, misaligned, bad values.
        assert_eq!(cohort_handle_ring(node, 0, 8, null(), 2), CohortResult::ErrNull);
        let many = [1u32; 33];
        assert_eq!(cohort_handle_ring(node, 0, 8, many.as_ptr(), 33), CohortResult::ErrTooManyEntries);
        let ids = [0u32, 1, 2];
        let misaligned_ids = ids.as_ptr().cast::<u8>().add(1).cast::<u32>();
        assert_eq!(cohort_handle_ring(node, 0, 8, misaligned_ids, 1), CohortResult::ErrMisaligned);
        assert_eq!(cohort_handle_ring(node, 0, 8, ids.as_ptr(), 1), CohortResult::ErrInvalidArgument, "id 0");
        let bad_reason = CohortMemberReason { node: 1, reason: 9 };
        let one = [1u32];
        assert_eq!(
            cohort_handle_confchg(node, 0, one.as_ptr(), 1, &bad_reason, 1, null(), 0),
            CohortResult::ErrInvalidArgument
        );

        // Strings and modes.
        assert_eq!(cohort_request_mount(node, 0, null(), 0, 2), CohortResult::ErrNull);
        let long = [b'a' as c_char; 64];
        assert_eq!(cohort_request_mount(node, 0, long.as_ptr(), 0, 2), CohortResult::ErrInvalidName);
        assert_eq!(cohort_request_mount(node, 0, c"".as_ptr(), 0, 2), CohortResult::ErrInvalidName);
        assert_eq!(cohort_request_mount(node, 0, FS, 7, 2), CohortResult::ErrInvalidArgument, "mode 7");

        // Messages.
        let junk = [0u8; 16];
        assert_eq!(cohort_handle_deliver(node, 0, 2, null(), 16), CohortResult::ErrNull);
        assert_eq!(
            cohort_handle_deliver(node, 0, 2, junk.as_ptr(), COHORT_MAX_MESSAGE + 1),
            CohortResult::ErrMessageTooLong
        );

        // Core errors come back as their own codes.
        assert_eq!(cohort_handle_confchg(node, 0, one.as_ptr(), 1, null(), 0, null(), 0), CohortResult::ErrNoRingYet);
        assert_eq!(cohort_handle_fenced(node, 0, 2, 1, true), CohortResult::ErrFenceNotRequested);
        assert_eq!(cohort_request_unmount(node, 0, FS), CohortResult::ErrNotMounted);

        // Finalised memory is refused again.
        assert_eq!(cohort_node_fini(node), CohortResult::Ok);
        assert_eq!(cohort_handle_timer(node, 0, 1), CohortResult::ErrNotInitialized);

        // Result strings are static and total.
        for code in -120..5 {
            assert!(!CStr::from_ptr(cohort_result_str(code)).to_bytes().is_empty());
        }
        assert_eq!(CStr::from_ptr(cohort_result_str(CohortResult::ErrBusy as i32)).to_str().unwrap(), "busy");
    }
}

/// Two nodes through the ABI only, passing messages between them.
struct Host {
    nodes: Vec<*mut CohortNode>,
    alive: Vec<bool>,
    bus: VecDeque<(u32, Vec<u8>)>,
    answers: VecDeque<(u32, std::ffi::CString, Answer)>,
    log: Vec<String>,
    now: u64,
    /// This node is drained only when nothing else can move: every input
    /// it takes meanwhile piles up undrained.
    lazy: Option<u32>,
}

enum Answer {
    MountResult,
    FirstDone,
    RecoveryDone(u16),
    Fenced(u32, u64),
}

impl Host {
    fn new(nodes: Vec<*mut CohortNode>, alive: Vec<bool>) -> Host {
        Host { nodes, alive, bus: VecDeque::new(), answers: VecDeque::new(), log: vec![], now: 0, lazy: None }
    }

    /// Node 1's daemon starts alone in ring 8, then node 2's joins; both
    /// stable.
    fn start_two(&mut self) {
        let join = |n| CohortMemberReason { node: n, reason: CohortReason::Join as u32 };
        self.alive[1] = false;
        self.ring(1, 8, &[1, 2]);
        self.confchg(1, &[1], &[join(1)], &[]);
        self.pump();
        self.alive[1] = true;
        self.ring(2, 8, &[1, 2]);
        self.confchg(1, &[1, 2], &[join(2)], &[]);
        self.confchg(2, &[1, 2], &[join(2)], &[]);
        self.pump();
        assert!(self.status(1).stable && self.status(2).stable, "{:#?}", self.log);
    }

    fn node(&self, n: u32) -> *mut CohortNode {
        self.nodes[n as usize - 1]
    }

    fn drain(&mut self, n: u32) -> bool {
        let mut moved = false;
        let mut e = zero_effect();
        loop {
            match unsafe { cohort_poll_effect(self.node(n), &mut e) } {
                CohortResult::Ok => {}
                CohortResult::Empty => break,
                r => panic!("poll_effect: {r:?}"),
            }
            moved = true;
            let fs = unsafe { CStr::from_ptr(e.fs.as_ptr()) }.to_str().unwrap().to_string();
            match e.kind {
                CohortEffectKind::Kernel => {
                    self.log.push(format!("{n}: kernel {:?} {fs} jid {}", e.kernel_op, e.jid));
                    let f = std::ffi::CString::new(fs.clone()).unwrap();
                    match e.kernel_op {
                        CohortKernelOp::MountFirst => {
                            self.answers.push_back((n, f.clone(), Answer::MountResult));
                            self.answers.push_back((n, f, Answer::FirstDone));
                        }
                        CohortKernelOp::Mount => self.answers.push_back((n, f, Answer::MountResult)),
                        CohortKernelOp::RecoverJournal => self.answers.push_back((n, f, Answer::RecoveryDone(e.jid))),
                        _ => {}
                    }
                }
                CohortEffectKind::Fence => {
                    self.log.push(format!("{n}: fence {}", e.node));
                    self.answers.push_back((n, std::ffi::CString::default(), Answer::Fenced(e.node, e.incarnation)));
                }
                CohortEffectKind::Notify => self.log.push(format!("{n}: notice {:?}", e.notice)),
                CohortEffectKind::SetTimer => panic!("no timer expected in this flow"),
                k => panic!("unexpected effect {k:?}"),
            }
        }
        let mut buf = vec![0u8; COHORT_MAX_MESSAGE];
        loop {
            let mut len = 0;
            match unsafe { cohort_poll_transmit(self.node(n), buf.as_mut_ptr(), buf.len(), &mut len) } {
                CohortResult::Ok => {
                    moved = true;
                    self.bus.push_back((n, buf[..len].to_vec()));
                }
                CohortResult::Empty => break,
                r => panic!("poll_transmit: {r:?}"),
            }
        }
        moved
    }

    fn pump(&mut self) {
        for _ in 0..10_000 {
            self.now += 1;
            let mut moved = false;
            for n in 1..=self.nodes.len() as u32 {
                if self.alive[n as usize - 1] && self.lazy != Some(n) {
                    moved |= self.drain(n);
                }
            }
            if let Some((from, bytes)) = self.bus.pop_front() {
                moved = true;
                for m in 1..=self.nodes.len() as u32 {
                    if self.alive[m as usize - 1] && self.alive[from as usize - 1] {
                        let r =
                            unsafe { cohort_handle_deliver(self.node(m), self.now, from, bytes.as_ptr(), bytes.len()) };
                        assert_eq!(r, CohortResult::Ok);
                    }
                }
            } else if let Some((n, fs, a)) = self.answers.pop_front() {
                moved = true;
                let node = self.node(n);
                let fs = fs.as_ptr();
                let r = unsafe {
                    match a {
                        Answer::MountResult => cohort_handle_kernel_mount_result(node, self.now, fs, true),
                        Answer::FirstDone => cohort_handle_kernel_first_recovery_done(node, self.now, fs),
                        Answer::RecoveryDone(jid) => cohort_handle_kernel_recovery_done(node, self.now, fs, jid, true),
                        Answer::Fenced(t, inc) => cohort_handle_fenced(node, self.now, t, inc, true),
                    }
                };
                assert_eq!(r, CohortResult::Ok);
            }
            if !moved {
                let lazy = self.lazy;
                match lazy {
                    Some(n) if self.drain(n) => continue,
                    _ => return,
                }
            }
        }
        panic!("no quiescence: {:#?}", self.log);
    }

    fn status(&self, n: u32) -> Box<CohortStatus> {
        let mut st: Box<CohortStatus> = Box::new(unsafe { std::mem::zeroed() });
        assert_eq!(unsafe { cohort_status(self.node(n), &mut *st) }, CohortResult::Ok);
        st
    }

    fn ring(&self, n: u32, ring: u64, members: &[u32]) {
        unsafe {
            assert_eq!(
                cohort_handle_ring(self.node(n), self.now, ring, members.as_ptr(), members.len()),
                CohortResult::Ok
            );
            let r = cohort_handle_quorum(self.node(n), self.now, ring, true, members.as_ptr(), members.len());
            assert_eq!(r, CohortResult::Ok);
        }
    }

    fn confchg(&self, n: u32, members: &[u32], joined: &[CohortMemberReason], left: &[CohortMemberReason]) {
        let r = unsafe {
            cohort_handle_confchg(
                self.node(n),
                self.now,
                members.as_ptr(),
                members.len(),
                joined.as_ptr(),
                joined.len(),
                left.as_ptr(),
                left.len(),
            )
        };
        assert_eq!(r, CohortResult::Ok);
    }
}

#[test]
fn two_nodes_mount_then_one_fails_and_is_fenced_and_recovered() {
    let mut mems = [Mem::new(), Mem::new()];
    let nodes: Vec<*mut CohortNode> = mems.iter_mut().enumerate().map(|(i, m)| init(m, i as u32 + 1, 1)).collect();
    let mut h = Host::new(nodes, vec![true, false]);
    h.start_two();

    for n in 1..=2 {
        let r = unsafe { cohort_request_mount(h.node(n), h.now, FS, CohortMode::Rw as u32, 2) };
        assert_eq!(r, CohortResult::Ok);
    }
    h.pump();
    let st = h.status(2);
    assert_eq!(st.n_groups, 1);
    let g = &st.groups[0];
    assert_eq!(unsafe { CStr::from_ptr(g.fs.as_ptr()) }, c"fs1");
    assert!(g.mounted_here && g.synced && !g.blocked);
    let jids: Vec<(u32, u16)> = g.members[..g.n_members as usize].iter().map(|m| (m.node, m.jid)).collect();
    assert_eq!(jids, vec![(1, 0), (2, 1)]);
    assert!(h.log.iter().any(|l| l.starts_with("1: kernel MountFirst")), "{:#?}", h.log);
    assert_eq!(unsafe { cohort_request_mount(h.node(1), h.now, FS, 0, 2) }, CohortResult::ErrAlreadyMounted);

    // Node 2 goes down; node 1 alone stays quorate (two_node).
    h.log.clear();
    h.alive[1] = false;
    let down = CohortMemberReason { node: 2, reason: CohortReason::NodeDown as u32 };
    h.confchg(1, &[1], &[], &[down]);
    h.ring(1, 12, &[1]);
    h.pump();
    let at = |p: &str| h.log.iter().position(|l| l.contains(p)).unwrap_or_else(|| panic!("{p}: {:#?}", h.log));
    let fence = at("1: fence 2");
    let recover = at("1: kernel RecoverJournal fs1 jid 1");
    let unblock = at("1: kernel Unblock");
    assert!(fence < recover && recover < unblock, "{:#?}", h.log);
    let st = h.status(1);
    assert!(st.stable);
    assert_eq!(st.n_fencing, 0);
    assert_eq!(st.groups[0].n_members, 1);
    assert_eq!(st.quorate, 1);
    assert_eq!(st.generation_ring, 12);
}

#[test]
fn a_host_that_drains_late_loses_nothing() {
    // Node 1 takes every delivery and kernel answer of a busy stretch (two
    // nodes mounting, remounting and unmounting three filesystems at once)
    // before it drains: nothing it queued for a group or a request may be
    // lost or land on another (descriptors are keyed by group id).
    let mut mems = [Mem::new(), Mem::new()];
    let nodes: Vec<*mut CohortNode> = mems.iter_mut().enumerate().map(|(i, m)| init(m, i as u32 + 1, 1)).collect();
    let mut h = Host::new(nodes, vec![true, false]);
    h.start_two();
    h.lazy = Some(1);
    let names = [c"a", c"b", c"c"];
    for f in names {
        for n in 1..=2 {
            assert_eq!(
                unsafe { cohort_request_mount(h.node(n), h.now, f.as_ptr(), CohortMode::Rw as u32, 2) },
                CohortResult::Ok
            );
        }
    }
    h.pump();
    let groups = |h: &Host, n: u32| -> Vec<(String, bool, u32)> {
        let st = h.status(n);
        st.groups[..st.n_groups as usize]
            .iter()
            .map(|g| {
                let name = unsafe { CStr::from_ptr(g.fs.as_ptr()) }.to_str().unwrap().to_owned();
                (name, g.synced && g.mounted_here && !g.blocked, g.n_members)
            })
            .collect()
    };
    for n in 1..=2 {
        let mut g = groups(&h, n);
        g.sort();
        let want: Vec<(String, bool, u32)> = ["a", "b", "c"].iter().map(|f| (f.to_string(), true, 2)).collect();
        assert_eq!(g, want, "node {n}: {:#?}", h.log);
    }
    // Node 2 leaves a, node 1 leaves c and remounts b read-only, at once.
    unsafe {
        assert_eq!(cohort_request_unmount(h.node(2), h.now, c"a".as_ptr()), CohortResult::Ok);
        assert_eq!(cohort_request_unmount(h.node(1), h.now, c"c".as_ptr()), CohortResult::Ok);
        assert_eq!(cohort_request_remount(h.node(1), h.now, c"b".as_ptr(), CohortMode::Ro as u32), CohortResult::Ok);
    }
    h.pump();
    let mut g1 = groups(&h, 1);
    g1.sort();
    assert_eq!(g1, vec![("a".to_string(), true, 1), ("b".to_string(), true, 2)], "{:#?}", h.log);
    let mut g2 = groups(&h, 2);
    g2.sort();
    assert_eq!(g2, vec![("b".to_string(), true, 2), ("c".to_string(), true, 1)], "{:#?}", h.log);
    assert!(h.status(1).stable && h.status(2).stable, "{:#?}", h.log);
}
