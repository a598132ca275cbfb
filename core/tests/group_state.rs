//! The mount group's pure parts on hand-built states: the state digest old
//! members exchange in their STARTs, and who may replay. Written against
//! mutants that survived cargo-mutants (issue 17): in a cluster every
//! member computes the same digest with the same code, so only a test that
//! compares digests of *different* states sees a digest that ignores a
//! field.

use cohort_core::ids::{Generation, GroupId, Incarnation, Jid, Member, NodeId};
use cohort_core::mount::{GMember, KState, MountGroup};
use cohort_core::wire::{fs_name, Mode, Recovery};

fn member(node: u32, jid: Option<u16>, mode: Mode, mounted: bool) -> GMember {
    GMember {
        node: NodeId(node),
        inc: Incarnation(1),
        mode,
        jid: jid.map(Jid),
        mounted,
        new: false,
        started: false,
        no_journal: false,
    }
}

fn group() -> MountGroup {
    let gen = Generation { ring: 8, epoch: 1 };
    let mut g = MountGroup::new(GroupId::of_fs("fs1"), fs_name("fs1").unwrap(), 8, gen);
    g.synced_gen = Some(gen);
    g.adopted = true;
    g.first_done = true;
    g.kstate = KState::Mounted;
    g.members.push(member(1, Some(0), Mode::Rw, true)).unwrap();
    g.members.push(member(2, Some(1), Mode::Rw, true)).unwrap();
    g.recoveries
        .push(Recovery {
            jid: Jid(2),
            owner: Member { node: NodeId(3), inc: Incarnation(1) },
            attempts: 1,
            actor: NodeId(1),
        })
        .unwrap();
    g
}

#[test]
fn the_digest_sees_every_described_field() {
    let base = group();
    let mut variants: Vec<(&str, MountGroup)> = vec![("base", base.clone())];
    let mut v = |name: &'static str, f: &dyn Fn(&mut MountGroup)| {
        let mut g = base.clone();
        f(&mut g);
        variants.push((name, g));
    };
    v("first_done", &|g| g.first_done = false);
    v("first_mounter", &|g| g.first_mounter = Some(NodeId(1)));
    v("member node", &|g| g.members[1].node = NodeId(4));
    v("member mode", &|g| g.members[1].mode = Mode::Ro);
    v("member mounted", &|g| g.members[1].mounted = false);
    v("member inc", &|g| g.members[1].inc = Incarnation(2));
    v("member jid", &|g| g.members[1].jid = Some(Jid(3)));
    v("member jid none", &|g| g.members[1].jid = None);
    v("recovery jid", &|g| g.recoveries[0].jid = Jid(5));
    v("recovery attempts", &|g| g.recoveries[0].attempts = 2);
    v("recovery owner", &|g| g.recoveries[0].owner.node = NodeId(5));
    v("recovery owner inc", &|g| g.recoveries[0].owner.inc = Incarnation(7));
    v("recovery actor", &|g| g.recoveries[0].actor = NodeId(2));
    v("no recovery", &|g| g.recoveries.clear());
    v("one member", &|g| {
        g.members.pop();
    });
    for (i, (a, ga)) in variants.iter().enumerate() {
        for (b, gb) in variants.iter().skip(i + 1) {
            assert_ne!(ga.digest(), gb.digest(), "{a} and {b} digest alike");
        }
    }
    // New members are not described: they do not change the digest.
    let mut g = base.clone();
    let mut n = member(5, None, Mode::Rw, false);
    n.new = true;
    g.members.push(n).unwrap();
    assert_eq!(g.digest(), base.digest());
    assert_eq!(base.digest(), group().digest(), "deterministic");
}

#[test]
fn recoverers_are_the_mounted_rw_members_with_a_journal() {
    let mut g = group();
    g.members.push(member(3, Some(2), Mode::Ro, true)).unwrap();
    g.members.push(member(4, Some(3), Mode::Rw, false)).unwrap();
    g.members.push(member(5, None, Mode::Spectator, true)).unwrap();
    assert_eq!(g.recoverers().to_vec(), vec![NodeId(1), NodeId(2)]);
    // Someone mounted can replay: no recovery mounter.
    assert_eq!(g.recovery_mounter(), None);
    // Nobody mounted rw: the lowest rw member with a journal mounts to replay.
    for m in g.members.iter_mut() {
        m.mounted = false;
    }
    g.members[0].no_journal = true;
    g.members[0].jid = None;
    assert_eq!(g.recoverers().to_vec(), Vec::<NodeId>::new());
    assert_eq!(g.recovery_mounter(), Some(NodeId(2)));
    g.members[1].mode = Mode::Ro;
    assert_eq!(g.recovery_mounter(), Some(NodeId(4)));
}
