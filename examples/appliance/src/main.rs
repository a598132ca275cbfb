//! A storage appliance node on a Cortex-M4: cohort-core driven by the
//! embassy driver on an embassy executor, logging through defmt.
//!
//! Nothing here is board specific: the NIC is a stub trait with a loopback
//! implementation (a one-node cluster: the transport delivers our own
//! multicasts back in order, as corosync does), the "kernel" and the fence
//! device are stubs that always succeed, and the clock is SysTick at 1 kHz.
//! On a real board, replace `LoopbackNic` with the radio/Ethernet driver
//! running the group-communication transport, `Kernel` with the storage
//! stack, and the clock with `embassy-time`.
//!
//! Tasks:
//! * `node`: `Driver::run`, the only place the node is handled;
//! * `nic_tx`: frames from the driver to the NIC;
//! * `nic_rx`: frames from the NIC into the driver (may wait on the inbox);
//! * `host`: effects (kernel ops, fencing, notices), answered with
//!   `try_send` plus a small backlog so it never waits on the inbox while
//!   the run loop waits on it (see `cohort_core::embassy`).
#![no_std]
#![no_main]

use core::cell::Cell;
use core::future::{poll_fn, Future};
use core::task::Poll;

use cohort_core::embassy::{Clock, Driver, Event, Frame, Inbound, TrySendError};
use cohort_core::gcs::{Confchg, MemberReason, NodeList, QuorumEvent, Reason, RingEvent, MAX_NODES};
use cohort_core::node::{Effect, KernelEvent, KernelOp, Request};
use cohort_core::wire::{fs_name, Mode, MAX_GROUPS};
use cohort_core::{Config, Incarnation, Instant, Member, NodeId};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use defmt::{info, warn};
use embassy_executor::Spawner;
use embassy_futures::select::{select, Either};
use embassy_sync::blocking_mutex::raw::{CriticalSectionRawMutex, ThreadModeRawMutex};
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::channel::Channel;
use embassy_sync::waitqueue::AtomicWaker;
use {defmt_rtt as _, panic_probe as _};

/// Core clock of the stub board.
const CPU_HZ: u32 = 64_000_000;
/// This node. A real appliance reads the id from its configuration and
/// persists the incarnation, incremented at every boot.
const ME: NodeId = NodeId(1);
const INCARNATION: Incarnation = Incarnation(1);

/// Inbox 4 × ~1.1 KiB, 16 events, 4 frames × 1 KiB (appliance profile). Everything runs in the
/// thread-mode executor, so the node is handled without masking interrupts.
type NodeDriver = Driver<ThreadModeRawMutex, 4, 16, 4>;
static DRIVER: NodeDriver = NodeDriver::new();

// ---------------------------------------------------------------- clock

static TICKS: Mutex<CriticalSectionRawMutex, Cell<u64>> = Mutex::new(Cell::new(0));
/// One waker per sleeper (the run loop, the status loop).
static TICK_WAKERS: [AtomicWaker; 2] = [AtomicWaker::new(), AtomicWaker::new()];

#[exception]
fn SysTick() {
    TICKS.lock(|t| t.set(t.get() + 1));
    for w in &TICK_WAKERS {
        w.wake();
    }
}

/// Milliseconds since boot from SysTick; its sleeper is woken at every tick
/// and re-checks its deadline.
struct SysTickClock {
    waker: &'static AtomicWaker,
}

impl Clock for SysTickClock {
    fn now(&self) -> Instant {
        Instant(TICKS.lock(|t| t.get()))
    }

    fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> {
        poll_fn(move |cx| {
            if self.now() >= at {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.now() >= at {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

// ---------------------------------------------------------------- NIC

/// What the appliance needs from its network: agreed-order multicast in
/// the daemon group, delivering every member's messages (ours included).
trait Nic {
    fn multicast(&mut self, frame: &[u8]) -> impl Future<Output = ()>;
    fn recv(&mut self) -> impl Future<Output = (NodeId, Frame)>;
}

/// A one-node group: what we multicast comes straight back.
static LOOP: Channel<ThreadModeRawMutex, Frame, 2> = Channel::new();

struct LoopbackNic;

impl Nic for LoopbackNic {
    async fn multicast(&mut self, frame: &[u8]) {
        let mut f = Frame::new();
        let _ = f.extend_from_slice(frame);
        LOOP.send(f).await;
    }

    async fn recv(&mut self) -> (NodeId, Frame) {
        (ME, LOOP.receive().await)
    }
}

// ---------------------------------------------------------------- tasks

#[embassy_executor::task]
async fn node() {
    let exit = DRIVER.run(&SysTickClock { waker: &TICK_WAKERS[0] }).await;
    // ResetSelf / Incompatible: a real appliance bumps the persisted
    // incarnation and reboots.
    warn!("node stopped: {}", exit);
}

#[embassy_executor::task]
async fn nic_tx(mut nic: LoopbackNic) {
    loop {
        let frame = DRIVER.transmit().await;
        nic.multicast(&frame).await;
    }
}

#[embassy_executor::task]
async fn nic_rx(mut nic: LoopbackNic) {
    loop {
        let (from, bytes) = nic.recv().await;
        // Waiting here is fine: this task does not drain the driver.
        DRIVER.send(Inbound::Deliver { from, bytes }).await;
    }
}

/// Answers of the stub kernel and fence device, small enough to keep
/// (an `Inbound` is ~4 KiB; this is ~50 bytes).
enum Answer {
    Kernel(KernelEvent),
    Fenced(Member),
}

/// At most one kernel operation per group with one or two answers, one
/// recovery per group, one fencing per node.
const ANSWERS: usize = 3 * MAX_GROUPS + MAX_NODES;

#[embassy_executor::task]
async fn host() {
    let mut backlog: heapless::Deque<Answer, ANSWERS> = heapless::Deque::new();
    loop {
        // Hand answers over while the inbox has room, never waiting on it.
        while let Some(a) = backlog.pop_front() {
            let input = match &a {
                Answer::Kernel(k) => Inbound::Kernel(k.clone()),
                Answer::Fenced(target) => Inbound::Fenced { target: *target, ok: true },
            };
            if let Err(TrySendError::Full(_)) = DRIVER.try_send(input) {
                let _ = backlog.push_front(a);
                break;
            }
        }
        let ev = if backlog.is_empty() {
            DRIVER.event().await
        } else {
            let room = poll_fn(|cx| DRIVER.inbox().poll_ready_to_send(cx));
            match select(DRIVER.event(), room).await {
                Either::First(ev) => ev,
                Either::Second(()) => continue,
            }
        };
        let mut answer = |a: Answer| {
            if backlog.push_back(a).is_err() {
                warn!("answer backlog full");
            }
        };
        match ev {
            Event::Effect(Effect::Kernel { group, fs, op }) => {
                info!("kernel {} {}: {}", group, fs, op);
                match op {
                    KernelOp::MountFirst(_) => {
                        answer(Answer::Kernel(KernelEvent::MountResult { fs: fs.clone(), ok: true }));
                        answer(Answer::Kernel(KernelEvent::FirstRecoveryDone { fs }));
                    }
                    KernelOp::Mount(_) | KernelOp::MountSpectator => {
                        answer(Answer::Kernel(KernelEvent::MountResult { fs, ok: true }))
                    }
                    KernelOp::RecoverJournal(jid) => {
                        answer(Answer::Kernel(KernelEvent::RecoveryDone { fs, jid, ok: true }))
                    }
                    _ => {}
                }
            }
            Event::Effect(Effect::Fence { target }) => {
                info!("fence {}", target);
                answer(Answer::Fenced(target));
            }
            Event::Effect(e) => info!("effect {}", e),
            Event::Rejected { input, error } => warn!("rejected {}: {}", input, error),
        }
    }
}

fn members(nodes: &[u32]) -> NodeList {
    nodes.iter().map(|n| NodeId(*n)).collect()
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let mut p = cortex_m::Peripherals::take().unwrap();
    p.SYST.set_clock_source(SystClkSource::Core);
    p.SYST.set_reload(CPU_HZ / 1000 - 1);
    p.SYST.clear_current();
    p.SYST.enable_counter();
    p.SYST.enable_interrupt();

    info!("cohort appliance: node {}, {} bytes per inbox slot", ME, cohort_core::embassy::INBOUND_SIZE);
    DRIVER.start(Config::new(ME, INCARNATION));
    spawner.spawn(node().unwrap());
    spawner.spawn(nic_tx(LoopbackNic).unwrap());
    spawner.spawn(nic_rx(LoopbackNic).unwrap());
    spawner.spawn(host().unwrap());

    // What the transport reports at start: the ring, quorum, our join.
    let ring = 1;
    DRIVER.send(Inbound::Ring(RingEvent { ring, members: members(&[1]) })).await;
    DRIVER.send(Inbound::Quorum(QuorumEvent { ring, quorate: true, members: members(&[1]) })).await;
    let mut cc = Confchg { members: members(&[1]), ..Default::default() };
    let _ = cc.joined.push(MemberReason { node: ME, reason: Reason::Join });
    DRIVER.send(Inbound::Confchg(cc)).await;
    if let Ok(fs) = fs_name("data") {
        DRIVER.send(Inbound::Request(Request::Mount { fs, mode: Mode::Rw, journals: 4 })).await;
    }

    let clock = SysTickClock { waker: &TICK_WAKERS[1] };
    let mut next = clock.now();
    loop {
        next = next.plus_ms(5000);
        clock.sleep_until(next).await;
        let summary = DRIVER.with_node(|n| {
            let st = n.status();
            (st.generation, st.groups.len(), st.groups.iter().filter(|g| g.mounted_here).count(), st.is_stable())
        });
        if let Some((generation, groups, mounted, stable)) = summary {
            info!("gen {} groups {} mounted {} stable {} {}", generation, groups, mounted, stable, DRIVER.stats());
        }
    }
}
