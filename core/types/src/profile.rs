//! Capacity profiles: every capacity of the core and the VS transport, chosen
//! at compile time.
//!
//! Nothing in cohort allocates, so every table has a size fixed when the
//! crate is compiled. The sizes come from one of two shipped profiles,
//! selected by the `appliance` feature of this crate (`cohort-core` and
//! `cohort-vs` forward their own `appliance` feature here, so one switch sets
//! both):
//!
//! | capacity | `host` (default) | `appliance` |
//! |---|---|---|
//! | nodes in a cluster ([`NODES`]) | 32 | 8 |
//! | mount groups, i.e. filesystems ([`GROUPS`]) | 16 | 4 |
//! | journals per filesystem ([`JOURNALS`]) | 256 | 64 |
//! | largest core message in bytes ([`MESSAGE`]) | 4096 | 1024 |
//! | effect queue ([`EFFECTS`]) | 128 | 48 |
//! | send queue ([`OUTBOX`]) | 96 | 32 |
//! | VS order window, units ([`ORDER_WINDOW`]) | 24 | 8 |
//! | VS send window, units ([`SEND_WINDOW`]) | 8 | 4 |
//! | VS reassembly pages of 1 KiB ([`REASSEMBLY_PAGES`]) | 8 | 2 |
//!
//! The appliance's VS windows are small (the order window is the smallest
//! the transport accepts, 8 units). Making them small first showed two liveness
//! bugs of the transport, both fixed (issue 19), neither specific to a
//! window size: small windows only made them likely. With an order window of
//! 16 units the udp simulator stalled (swarm seed 1223, 8 nodes): a late
//! `RESEND` moved a sender's transmit cursor back to a unit it had already
//! delivered, so nothing was sent and no retransmission timer was armed
//! again (scenario `tests/core-bugs/vs19-late-resend-wedges-sender.txt`).
//! With 8 units, or a send window of 4 and 2 pages, a steady sender on a
//! lossy network was excluded from the view for seconds (`vs` test
//! `small_messages_are_packed_and_keep_total_order_through_a_sequencer_crash`):
//! members learned the stability point from the sequencer only, so after
//! it died a member could know an older one than the flush holder and find
//! the flush target past the end of its receive window (`vs` test
//! `a_member_whose_stability_point_lags_still_reaches_the_flush_target`).
//!
//! Each crate checks at compile time that the profile is consistent with its
//! own rules (an input's worst case fits the queues, a largest message fits
//! the send window and the reassembly pages, ...), so most profiles that
//! cannot work do not build; `core/tests/wire_props.rs`
//! (`the_largest_message_of_every_kind_fits`) checks that every message at
//! its largest fits [`MESSAGE`], and CI runs the core's tests, the VS tests
//! that fit its message size and swarms in the appliance profile.
//!
//! **One profile per cluster.** The wire format is the same in both, but a
//! message is refused at decoding when a list in it is longer than the
//! receiver's capacity (a typed error, nothing applied). Every node of a
//! cluster is built with the same profile; a host-profile node can join an
//! appliance cluster only while the cluster stays within the appliance
//! capacities (8 nodes, 4 filesystems, 64 journals).

#[cfg(not(feature = "appliance"))]
mod chosen {
    /// The profile's name, as reports print it.
    pub const NAME: &str = "host";
    /// Most nodes in a cluster (at most 32: member sets are `u32` masks).
    pub const NODES: usize = 32;
    /// Most mount groups (filesystems) at once.
    pub const GROUPS: usize = 16;
    /// Most journals a filesystem may have.
    pub const JOURNALS: usize = 256;
    /// Largest encoded core message, header and body.
    pub const MESSAGE: usize = 4096;
    /// Capacity of the core's effect queue.
    pub const EFFECTS: usize = 128;
    /// Capacity of the core's send queue.
    pub const OUTBOX: usize = 96;
    /// VS: sequenced units held per view (delivery and retransmission).
    pub const ORDER_WINDOW: usize = 24;
    /// VS: own units queued before the send window is full.
    pub const SEND_WINDOW: usize = 8;
    /// VS: reassembly pages shared by all senders.
    pub const REASSEMBLY_PAGES: usize = 8;
}

#[cfg(feature = "appliance")]
mod chosen {
    /// The profile's name, as reports print it.
    pub const NAME: &str = "appliance";
    /// Most nodes in a cluster (at most 32: member sets are `u32` masks).
    pub const NODES: usize = 8;
    /// Most mount groups (filesystems) at once.
    pub const GROUPS: usize = 4;
    /// Most journals a filesystem may have.
    pub const JOURNALS: usize = 64;
    /// Largest encoded core message, header and body.
    pub const MESSAGE: usize = 1024;
    /// Capacity of the core's effect queue.
    pub const EFFECTS: usize = 48;
    /// Capacity of the core's send queue.
    pub const OUTBOX: usize = 32;
    /// VS: sequenced units held per view (delivery and retransmission).
    pub const ORDER_WINDOW: usize = 8;
    /// VS: own units queued before the send window is full.
    pub const SEND_WINDOW: usize = 4;
    /// VS: reassembly pages shared by all senders.
    pub const REASSEMBLY_PAGES: usize = 2;
}

pub use chosen::*;

const _: () = assert!(NODES >= 1 && NODES <= 32, "member sets are u32 masks");
const _: () = assert!(GROUPS >= 1);
const _: () = assert!(JOURNALS >= 1 && JOURNALS <= u16::MAX as usize);
