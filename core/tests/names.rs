//! Group ids are a 31-bit hash of the filesystem name: two names with the
//! same id must never share a group (their journals are different disks'
//! journals). "fs188883" and "fs632435" collide.

mod common;

use cohort_core::node::{Request, RequestError};
use cohort_core::wire::{fs_name, Mode};
use cohort_core::{GroupId, Instant};
use common::Cluster;

const A: &str = "fs188883";
const B: &str = "fs632435";

fn mount(fs: &str) -> Request {
    Request::Mount { fs: fs_name(fs).unwrap(), mode: Mode::Rw, journals: 4 }
}

fn members(c: &Cluster, at: u32, fs: &str) -> Option<(Vec<u32>, String)> {
    let st = c.node(at).status();
    st.groups
        .iter()
        .find(|g| g.group == GroupId::of_fs(fs))
        .map(|g| (g.members.iter().map(|m| m.node.0).collect(), g.fs.as_str().to_owned()))
}

#[test]
fn the_names_collide() {
    assert_eq!(GroupId::of_fs(A), GroupId::of_fs(B));
}

#[test]
fn a_local_request_for_a_colliding_name_is_refused() {
    let mut c = Cluster::new(2);
    c.request(1, mount(A));
    // Queued, not applied yet: the pending request already counts.
    let now = Instant(c.now);
    let n = c.nodes[1].as_mut().unwrap();
    assert_eq!(
        n.handle(now, cohort_core::node::Input::Request(mount(B))),
        Err(cohort_core::HandleError::Request(RequestError::NameCollision))
    );
    c.pump();
    // Applied and mounted: node 1 and node 2 (which knows A's group from
    // the agreed state) both refuse B.
    for i in [1, 2] {
        let now = Instant(c.now);
        let n = c.nodes[i as usize].as_mut().unwrap();
        assert_eq!(
            n.handle(now, cohort_core::node::Input::Request(mount(B))),
            Err(cohort_core::HandleError::Request(RequestError::NameCollision))
        );
    }
    assert_eq!(members(&c, 1, A), Some((vec![1], A.to_owned())));
}

#[test]
fn colliding_mounts_in_flight_together_never_share_a_group() {
    let mut c = Cluster::new(3);
    // Both requests go out before either is applied: the second one in
    // agreed order is refused when applied, everywhere alike.
    c.request(1, mount(A));
    c.request(2, mount(B));
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    for at in 1..=3 {
        assert_eq!(members(&c, at, A).map(|m| m.0), if at == 1 { Some(vec![1]) } else { None }, "{}", c.status_dump());
    }
    let refused: Vec<&String> = c.log.iter().filter(|l| l.contains("MountError(NameCollision)")).collect();
    assert_eq!(refused.len(), 1, "{:?}", c.log);
    assert!(refused[0].starts_with("2: "), "{refused:?}");
    assert!(refused[0].contains(B), "{refused:?}");
    // Node 2 mounts A itself: one group, two members.
    c.request(2, mount(A));
    c.pump();
    assert_eq!(members(&c, 1, A), Some((vec![1, 2], A.to_owned())));
    assert!(c.all_stable(), "{}", c.status_dump());
}
