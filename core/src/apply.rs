//! Delivered messages and operator requests: validation, the generation
//! rule, and application in agreed order.

use crate::daemon::{DaemonPhase, Logical, OpKind};
use crate::ids::{GroupId, Member, NodeId};
use crate::mount::Removal;
use crate::node::Node;
use crate::vocab::{DeliverError, DropReason, KernelOp, MountError, Notice, Out, Request, RequestError};
use crate::wire::{self, Body, FsName, Header, Message, MountReq, WireError, MAX_GROUPS, MAX_JOURNALS};
use cohort_types::bounded::PushBounded;

impl Node {
    pub(crate) fn on_deliver(&mut self, from: NodeId, bytes: &[u8]) -> Result<(), DeliverError> {
        let mut msg = Message::placeholder();
        if let Err(e) = wire::decode_into(bytes, &mut msg) {
            self.stats.wire_errors += 1;
            return Err(DeliverError::Wire(e));
        }
        if msg.header.sender.node != from {
            self.stats.wire_errors += 1;
            return Err(DeliverError::SenderMismatch);
        }
        self.stats.delivered += 1;
        let h = msg.header;
        let r = if self.d.is_stale(h.sender) {
            Err(DropReason::StaleSender)
        } else if h.view != self.barrier.current().ring {
            // Sent in another transport view (the transport resent it in a
            // later one): every member that delivers it here drops it, the
            // sender too; what is still needed goes out again (STARTs at the
            // next daemon sync, facts, requests and fence results when
            // kicked).
            Err(DropReason::OtherView)
        } else {
            self.apply(&h, &msg.body)
        };
        // Part of the lineage: every message delivered since the last
        // completed cycle, applied here or not (the delivered stream is what
        // members that moved together share; what each applies of it
        // depends on who it is). The cycle's own messages are the cycle.
        if !matches!(msg.body, Body::DaemonStart(_) | Body::DaemonSync(_)) {
            self.d.acted = crate::daemon::merge::fold_acted(self.d.acted, bytes);
        }
        match r {
            Ok(()) => self.stats.applied += 1,
            Err(reason) => {
                match reason {
                    DropReason::OldGeneration => self.stats.dropped_old_generation += 1,
                    DropReason::OtherView => self.stats.dropped_other_view += 1,
                    DropReason::StaleSender => self.stats.dropped_stale_sender += 1,
                    _ => self.stats.dropped_other += 1,
                }
                self.stats.last_drop = Some(reason);
                trace!("dropped message from {}", from.0);
                if reason == DropReason::StaleSender {
                    self.out.notify(Notice::Dropped { reason });
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, h: &Header, body: &Body) -> Result<(), DropReason> {
        match body {
            Body::DaemonStart(s) => self.on_daemon_start(h, s),
            Body::DaemonSync(s) => self.on_daemon_sync(h, s),
            Body::FenceResult(r) => {
                self.check_synced_sender(h)?;
                if self.on_fence_result(h, r) {
                    Ok(())
                } else {
                    Err(DropReason::OldGeneration)
                }
            }
            Body::Mount(_) | Body::Unmount | Body::Remount(_) | Body::Withdraw => {
                self.check_synced_sender(h)?;
                self.apply_op(h, body)
            }
            Body::MountStart(s) => {
                let i = self.group_slot(h.group).ok_or(DropReason::NotMember)?;
                self.on_mount_start(i, h, s)
            }
            Body::MountState(s) => {
                let i = self.group_slot(h.group).ok_or(DropReason::NotMember)?;
                self.on_mount_state(i, h, s)
            }
            Body::MountDone { .. } | Body::FirstDone | Body::RecoveryResult(_) => {
                let i = self.group_slot(h.group).ok_or(DropReason::NotMember)?;
                self.on_group_fact(i, h, body)
            }
        }
    }

    /// Daemon-stream messages other than the cycle's own: only between
    /// cycles, only of the current generation, only from members.
    fn check_synced_sender(&self, h: &Header) -> Result<(), DropReason> {
        if self.d.phase != DaemonPhase::Complete {
            return Err(DropReason::NotSynced);
        }
        if h.generation != self.barrier.current() {
            return Err(DropReason::OldGeneration);
        }
        match self.d.peer(h.sender.node) {
            Some(p) if p.inc == Some(h.sender.inc) => Ok(()),
            Some(_) => Err(DropReason::StaleSender),
            None => Err(DropReason::NotMember),
        }
    }

    /// A membership request, in agreed order. Every synced member applies
    /// the same ones, so every member advances the epoch identically.
    fn apply_op(&mut self, h: &Header, body: &Body) -> Result<(), DropReason> {
        let sender = h.sender.node;
        let me = self.cfg.node;
        let gid = h.group;
        let li = self.d.logical.iter().position(|g| g.gid == gid);
        let cause;
        match body {
            Body::Mount(req) => {
                match li {
                    Some(li) => {
                        let l = &mut self.d.logical[li];
                        if l.fs != req.fs {
                            // Two names, one group id: never one group (their
                            // journals are different disks' journals).
                            return Err(self.refuse_mount(sender, gid, &req.fs, MountError::NameCollision));
                        }
                        if l.contains(sender) {
                            return Err(DropReason::AlreadyMember);
                        }
                        let pos = l.members.iter().position(|m| m.0 > sender).unwrap_or(l.members.len());
                        if l.members.insert(pos, (sender, req.mode)).is_err() {
                            return Err(DropReason::TableFull);
                        }
                    }
                    None => {
                        let mut l =
                            Logical { gid, fs: req.fs.clone(), journals: req.journals, members: heapless::Vec::new() };
                        l.members.push_bounded((sender, req.mode));
                        if self.d.logical.push(l).is_err() {
                            return Err(self.refuse_mount(sender, gid, &req.fs, MountError::TooManyGroups));
                        }
                    }
                }
                cause = None;
            }
            Body::Unmount | Body::Withdraw => {
                let Some(li) = li else { return Err(DropReason::NotMember) };
                let l = &mut self.d.logical[li];
                let Some(pos) = l.members.iter().position(|m| m.0 == sender) else {
                    return Err(DropReason::NotMember);
                };
                l.members.remove(pos);
                let why = if matches!(body, Body::Withdraw) { Removal::Withdrawn } else { Removal::Left };
                cause = Some((sender, why));
            }
            Body::Remount(mode) => {
                let Some(li) = li else { return Err(DropReason::NotMember) };
                let l = &mut self.d.logical[li];
                let Some(m) = l.members.iter_mut().find(|m| m.0 == sender) else {
                    return Err(DropReason::NotMember);
                };
                if !m.1.needs_journal() || !mode.needs_journal() {
                    // Spectators cannot remount into a journal and back.
                    return Err(DropReason::Inapplicable);
                }
                m.1 = *mode;
                cause = None;
            }
            _ => return Err(DropReason::Inapplicable),
        }
        let gen = self.barrier.bump_epoch();
        let logical = self.d.logical.iter().find(|g| g.gid == gid).cloned();
        if let Some(l) = &logical {
            if l.members.is_empty() {
                self.d.logical.retain(|g| g.gid != gid);
            }
        }
        if sender == me {
            // Only the request that was applied: one that replaced it
            // meanwhile (a withdraw after a remount) still goes out.
            self.d.ops.retain(|o| o.gid != gid || o.kind.msg_kind() != body.kind());
        }
        let slot = self.group_slot(gid);
        match (slot, &logical) {
            (Some(i), Some(l)) if l.contains(me) => self.group_membership(i, gen, l, cause),
            (Some(i), _) => {
                // We left: finish locally.
                let op = match cause {
                    Some((_, Removal::Withdrawn)) => KernelOp::Release,
                    _ => KernelOp::Unmounted,
                };
                self.group_remove(i, op);
            }
            (None, Some(l)) if l.contains(me) && sender == me => self.group_create(l, gen),
            _ => {}
        }
        // Other groups keep their change generation; requests of ours that
        // were stamped with the old generation go out again.
        self.resend_ops();
        self.kick();
        Ok(())
    }

    /// A mount that cannot be applied: the sender's own request ends with
    /// the kernel told why; every member drops it alike.
    fn refuse_mount(&mut self, sender: NodeId, gid: GroupId, fs: &FsName, e: MountError) -> DropReason {
        if sender == self.cfg.node {
            self.op_done(gid);
            self.out.effect(crate::vocab::Effect::Kernel { group: gid, fs: fs.clone(), op: KernelOp::MountError(e) });
        }
        match e {
            MountError::NameCollision => DropReason::NameCollision,
            _ => DropReason::TableFull,
        }
    }

    fn op_done(&mut self, gid: GroupId) {
        self.d.ops.retain(|o| o.gid != gid);
    }

    pub(crate) fn on_request(&mut self, r: Request) -> Result<(), RequestError> {
        match r {
            Request::Mount { fs, mode, journals } => {
                wire::fs_name(&fs).map_err(|_| RequestError::InvalidName)?;
                if journals == 0 || usize::from(journals) > MAX_JOURNALS {
                    return Err(RequestError::InvalidJournals);
                }
                let gid = GroupId::of_fs(&fs);
                let other_name = |n: &FsName| *n != fs;
                if self.group_slot(gid).is_some_and(|i| other_name(&self.groups[i].fs))
                    || self.d.logical(gid).is_some_and(|l| other_name(&l.fs))
                    || self.d.ops.iter().any(|o| o.gid == gid && other_name(&o.fs))
                {
                    return Err(RequestError::NameCollision);
                }
                if self.group_slot(gid).is_some() {
                    return Err(RequestError::AlreadyMounted);
                }
                if self.d.ops.iter().any(|o| o.gid == gid) {
                    return Err(RequestError::Busy);
                }
                // Mounts being requested count: one pending op per group
                // (existing or requested) then always fits the op table,
                // so the node's own leave (after a failed mount) never fails
                // to queue.
                let requested = self.d.ops.iter().filter(|o| matches!(o.kind, OpKind::Mount { .. })).count();
                if self.groups.len() + requested >= MAX_GROUPS
                    || (self.d.logical(gid).is_none() && self.d.logical.len() >= MAX_GROUPS)
                {
                    return Err(RequestError::TooManyGroups);
                }
                if !self.queue_op(gid, fs, OpKind::Mount { mode, journals }) {
                    return Err(RequestError::Busy);
                }
                Ok(())
            }
            Request::Unmount { fs } => {
                let gid = GroupId::of_fs(&fs);
                if let Some(i) = self.group_slot(gid).filter(|&i| self.groups[i].withdrawn) {
                    if self.groups[i].recovering.take().is_some() {
                        // The withdraw waited for our kernel's replay to
                        // end, and the host unmounted instead: an unmounted
                        // kernel does no I/O and never reports, so the
                        // replay ended unfinished. The withdraw goes out
                        // now; the others replay that journal again
                        // (CORE-BUG-25: waited forever).
                        return self.group_send_withdraw(i).map_err(|_| RequestError::Busy);
                    }
                    // The kernel withdrew: the group is left by the withdraw.
                    return Err(RequestError::Busy);
                }
                if self.group_slot(gid).is_none() {
                    // A mount still being requested is simply cancelled.
                    if self.d.ops.iter().any(|o| o.gid == gid && matches!(o.kind, OpKind::Mount { .. })) {
                        self.op_done(gid);
                        return Ok(());
                    }
                    return Err(RequestError::NotMounted);
                }
                if !self.queue_op(gid, fs, OpKind::Unmount) {
                    return Err(RequestError::Busy);
                }
                Ok(())
            }
            Request::Remount { fs, mode } => {
                let gid = GroupId::of_fs(&fs);
                let Some(i) = self.group_slot(gid) else { return Err(RequestError::NotMounted) };
                if self.groups[i].withdrawn {
                    return Err(RequestError::Busy);
                }
                if !self.queue_op(gid, fs, OpKind::Remount(mode)) {
                    return Err(RequestError::Busy);
                }
                Ok(())
            }
        }
    }

    /// Encode a send descriptor into `buf`: `None` if it went stale.
    pub(crate) fn render_into(&self, out: &Out, buf: &mut [u8]) -> Option<Result<usize, WireError>> {
        let me = Member { node: self.cfg.node, inc: self.cfg.incarnation };
        let cur = self.barrier.current();
        let view = cur.ring;
        let hdr = |kind, generation, group| Header { kind, sender: me, generation, group, view };
        use crate::wire::MsgKind as K;
        let enc = |k: K, generation, group, body: Option<&dyn ErasedBody>, buf: &mut [u8]| {
            let h = hdr(k, generation, group);
            match body {
                Some(b) => b.encode(&h, k, buf),
                None => wire::encode_parts::<()>(&h, k, None, buf),
            }
        };
        Some(match out {
            Out::DaemonStart { gen } => {
                // Unanchored starts are self-descriptions: their generation
                // is our local count, whatever it is now.
                if *gen != cur && self.barrier.anchored() {
                    return None;
                }
                let s = self.build_daemon_start();
                enc(K::DaemonStart, cur, GroupId::DAEMON, Some(&s), buf)
            }
            Out::DaemonSync { gen } => {
                if *gen != cur {
                    return None;
                }
                let s = self.build_daemon_sync();
                enc(K::DaemonSync, cur, GroupId::DAEMON, Some(&s), buf)
            }
            Out::Op { gid, gen } => {
                let op = self.d.ops.iter().find(|o| o.gid == *gid)?;
                if *gen != cur || op.sent_at != Some(cur) {
                    return None;
                }
                let k = op.kind.msg_kind();
                match op.kind {
                    OpKind::Mount { mode, journals } => {
                        let m = MountReq { fs: op.fs.clone(), mode, journals };
                        enc(k, cur, op.gid, Some(&m), buf)
                    }
                    OpKind::Remount(m) => enc(k, cur, op.gid, Some(&m), buf),
                    OpKind::Unmount | OpKind::Withdraw => enc(k, cur, op.gid, None, buf),
                }
            }
            Out::FenceResult { gen, res } => {
                if *gen != cur {
                    return None;
                }
                enc(K::FenceResult, cur, GroupId::DAEMON, Some(res), buf)
            }
            Out::MountStart { gid, gen } => {
                let g = self.groups.iter().find(|g| g.gid == *gid)?;
                if g.change_gen != *gen || g.is_synced() {
                    return None;
                }
                let s = g.build_start(self.cfg.node, g.synced_gen.is_some());
                enc(K::MountStart, *gen, g.gid, Some(&s), buf)
            }
            Out::MountState { gid, gen } => {
                let g = self.groups.iter().find(|g| g.gid == *gid)?;
                if g.change_gen != *gen || g.is_synced() {
                    return None;
                }
                let s = g.build_state();
                enc(K::MountState, *gen, g.gid, Some(&s), buf)
            }
            Out::MountDone { gid, gen, ok } => {
                let g = self.groups.iter().find(|g| g.gid == *gid)?;
                if g.change_gen != *gen {
                    return None;
                }
                enc(K::MountDone, *gen, g.gid, Some(ok), buf)
            }
            Out::FirstDone { gid, gen } => {
                let g = self.groups.iter().find(|g| g.gid == *gid)?;
                if g.change_gen != *gen {
                    return None;
                }
                enc(K::FirstDone, *gen, g.gid, None, buf)
            }
            Out::RecoveryResult { gid, gen, res } => {
                let g = self.groups.iter().find(|g| g.gid == *gid)?;
                if g.change_gen != *gen {
                    return None;
                }
                enc(K::RecoveryResult, *gen, g.gid, Some(res), buf)
            }
        })
    }
}

/// Object-safe encoding of any body type (keeps `render_into` one match).
trait ErasedBody {
    fn encode(&self, h: &Header, k: wire::MsgKind, buf: &mut [u8]) -> Result<usize, WireError>;
}

impl<T: serde::Serialize> ErasedBody for T {
    fn encode(&self, h: &Header, k: wire::MsgKind, buf: &mut [u8]) -> Result<usize, WireError> {
        wire::encode_parts(h, k, Some(self), buf)
    }
}
