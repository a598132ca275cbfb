//! Repro scenarios of the core bugs in `tests/CORE_BUGS.md`. They pass once
//! the bug is fixed; run by `cargo test` (all fixed); a new one starts `#[ignore]`d until fixed:
//! `cargo test -p cohort-sim --test core_bugs -- --ignored`.

fn run(file: &str, seed: u64) {
    let path = format!("{}/core-bugs/{file}", env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = cohort_sim::scenario::run_file(&path, seed, false) {
        panic!("{e}");
    }
}

#[test]
fn bug1_paused_node_wins_verdict() {
    run("bug1-paused-node-wins-verdict.txt", 1);
}

#[test]
fn bug1_merge_ring_quorum_decides() {
    run("bug1-merge-ring-quorum-decides.txt", 2);
}

#[test]
fn bug2_two_first_mounters() {
    run("bug2-two-first-mounters.txt", 1);
}

#[test]
fn bug3_unagreed_mount_not_replayed() {
    run("bug3-unagreed-mount-not-replayed.txt", 1);
}

#[test]
fn bug4_concurrent_replay() {
    run("bug4-concurrent-replay.txt", 1);
}

#[test]
fn bug5_last_member_lost_fresh_first_mount() {
    run("bug5-last-member-lost-fresh-first-mount.txt", 1);
}

#[test]
fn bug6_restarted_member_kept_in_group() {
    run("bug6-restarted-member-kept-in-group.txt", 1);
}

#[test]
fn bug7_stale_merge_undetected() {
    run("bug7-stale-merge-undetected.txt", 1);
}

#[test]
fn bug8_fence_attempts_diverge() {
    run("bug8-fence-attempts-diverge.txt", 1);
}

#[test]
fn bug9_no_startup_fencing() {
    run("bug9-no-startup-fencing.txt", 1);
}

#[test]
fn bug10_ro_journal_reused_before_fencing() {
    run("bug10-ro-journal-reused-before-fencing.txt", 1);
}

#[test]
fn bug11_vs_fresh_joiner_epochs() {
    run("bug11-vs-fresh-joiner-epochs.txt", 1);
}

#[test]
fn bug11_vs_missed_install_epochs() {
    run("bug11-vs-missed-install-epochs.txt", 120);
}

#[test]
fn bug12_rejoined_member_replayed_unfenced() {
    run("bug12-rejoined-member-replayed-unfenced.txt", 1);
}

#[test]
fn bug13_vs_stale_propose_wedges_member() {
    run("bug13-vs-stale-propose-wedges-member.txt", 3524);
}

#[test]
fn bug14_message_missed_in_an_uninstalled_view() {
    run("bug14-message-missed-in-an-uninstalled-view.txt", 3238);
}

#[test]
fn bug15_old_view_start_syncs_stale_group() {
    run("bug15-old-view-start-syncs-stale-group.txt", 17178);
}

#[test]
fn bug15_corosync_stale_start() {
    run("bug15-corosync-stale-start.txt", 563103782993922);
}

#[test]
fn bug16_concurrent_replay_after_withdraw() {
    run("bug16-concurrent-replay-after-merge.txt", 13834818358261319424);
}

#[test]
fn bug17_unmount_during_replay() {
    run("bug17-unmount-during-replay.txt", 382355);
}

#[test]
fn bug16_withdraw_during_replay() {
    run("bug16-withdraw-during-replay.txt", 230688);
}

#[test]
fn bug18_paused_node_own_sync_in_dead_ring() {
    run("bug18-paused-node-own-sync-in-dead-ring.txt", 51319);
}

#[test]
fn bug18_paused_node_group_sync_in_dead_ring() {
    run("bug18-paused-node-group-sync-in-dead-ring.txt", 909477);
}

#[test]
fn bug19_withdraw_lost_after_remount() {
    run("bug19-withdraw-lost-after-remount.txt", 470915);
}

#[test]
fn bug20_first_mounter_own_dirty_journal() {
    run("bug20-first-mounter-own-dirty-journal.txt", 928198);
}

#[test]
fn bug21_mount_again_after_failed_mount() {
    run("bug21-mount-again-after-failed-mount.txt", 19998);
}

#[test]
fn bug22_remount_replaces_withdraw() {
    run("bug22-remount-replaces-withdraw.txt", 1528702);
}

#[test]
fn bug25_withdraw_mid_replay_unmount() {
    run("bug25-withdraw-mid-replay-unmount.txt", 1);
}

#[test]
fn bug26_forgotten_mount_first_mounter() {
    run("bug26-forgotten-mount-first-mounter.txt", 1);
}

#[test]
fn bug27_block_after_unmount() {
    run("bug27-block-after-unmount.txt", 1);
}

/// Not a core bug: a cohort-vs one found by the udp swarm (see the file).
#[test]
fn vs19_late_resend_wedges_sender() {
    run("vs19-late-resend-wedges-sender.txt", 1223);
}

#[test]
fn bug29_late_quorum_report_opens_gap() {
    run("bug29-late-quorum-report-opens-gap.txt", 822618);
}
