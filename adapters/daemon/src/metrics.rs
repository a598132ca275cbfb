//! `cohortctl metrics`: the daemon's counters and gauges in Prometheus'
//! text exposition format (0.0.4), for node_exporter's textfile collector
//! (`cohortctl metrics > /var/lib/node_exporter/cohort.prom.$$ && mv ...`)
//! or any scraper that runs a command. Counters count since this daemon
//! started (a restart, e.g. after a reset, starts them again: the
//! `cohort_incarnation` gauge tells restarts apart).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::api::StatusJson;

/// What the engine counts as it runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Transport views (corosync rings, UDP views) installed.
    pub views: u64,
    pub daemon_syncs: u64,
    pub group_syncs: u64,
    /// Stateful merges resolved (the losing side resets).
    pub stale_merges: u64,
    /// This daemon lost a stale-merge verdict (it stops and restarts).
    pub resets: u64,
    pub fence_attempts: u64,
    pub fence_failures: u64,
    /// Stale-merge backup kills started.
    pub kills: u64,
    pub recoveries_ok: u64,
    pub recoveries_failed: u64,
    /// Journal replays run by this node's kernel: total and longest time.
    pub recovery_ms_sum: u64,
    pub recovery_ms_max: u64,
    pub mount_failures: u64,
    pub withdraws: u64,
}

/// Control requests answered, by command and outcome.
pub type Requests = BTreeMap<(String, bool), u64>;

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {v}");
    }

    fn labelled(&mut self, name: &str, kind: &str, help: &str, label: &str, rows: &[(&str, u64)]) {
        self.head(name, kind, help);
        for (l, v) in rows {
            let _ = writeln!(self.0, "{name}{{{label}=\"{}\"}} {v}", escape(l));
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The exposition text.
pub fn render(st: &StatusJson, c: &Counters, udp: Option<&cohort_udp::Stats>, requests: &Requests) -> String {
    let mut o = Out(String::new());
    o.one("cohort_node_id", "gauge", "This daemon's node id.", st.node);
    o.one("cohort_incarnation", "gauge", "This daemon's incarnation (grows with every start).", st.incarnation);
    o.one("cohort_uptime_seconds", "gauge", "Seconds since this daemon started.", st.uptime_ms as f64 / 1000.0);
    o.one(
        "cohort_quorate",
        "gauge",
        "1 if the current view is quorate, 0 if not, -1 if not known yet.",
        st.quorate.map_or(-1, i32::from),
    );
    o.one("cohort_generation_ring", "gauge", "Ring (view) of the current generation.", st.generation.ring);
    o.one("cohort_stable", "gauge", "1 if nothing waits anywhere.", u8::from(st.stable));
    o.one("cohort_daemon_members", "gauge", "Members of the daemon group (stale ones included).", st.members.len());
    o.one("cohort_fencing_pending", "gauge", "Nodes waiting to be fenced.", st.fencing.len());
    let mounted = st.groups.iter().filter(|g| g.mounted_here).count();
    let blocked = st.groups.iter().filter(|g| g.blocked).count();
    o.one("cohort_filesystems_mounted", "gauge", "Filesystems this node is a mounted member of.", mounted);
    o.one("cohort_filesystems_blocked", "gauge", "Filesystems blocked (recovery or a change in progress).", blocked);
    let recoveries: usize = st.groups.iter().map(|g| g.recoveries.len()).sum();
    o.one("cohort_journals_awaiting_replay", "gauge", "Journals of failed members not replayed yet.", recoveries);

    o.one("cohort_views_installed_total", "counter", "Transport views (rings) installed.", c.views);
    o.one("cohort_daemon_syncs_total", "counter", "Daemon group cycles completed.", c.daemon_syncs);
    o.one("cohort_group_syncs_total", "counter", "Mount group changes completed.", c.group_syncs);
    o.one("cohort_stale_merges_total", "counter", "Stateful merges resolved (the losing side resets).", c.stale_merges);
    o.one("cohort_resets_total", "counter", "Stale-merge verdicts this daemon lost (it restarts).", c.resets);
    o.one("cohort_fence_attempts_total", "counter", "Fence agent runs started by this node.", c.fence_attempts);
    o.one("cohort_fence_failures_total", "counter", "Fence agent runs of this node that failed.", c.fence_failures);
    o.one("cohort_kills_total", "counter", "Stale-merge backup kills started by this node.", c.kills);
    o.labelled(
        "cohort_journal_recoveries_total",
        "counter",
        "Journal replays run by this node's kernel, by result.",
        "result",
        &[("ok", c.recoveries_ok), ("failed", c.recoveries_failed)],
    );
    o.one(
        "cohort_journal_recovery_seconds_sum",
        "counter",
        "Time this node's kernel spent replaying journals.",
        c.recovery_ms_sum as f64 / 1000.0,
    );
    o.one(
        "cohort_journal_recovery_seconds_max",
        "gauge",
        "Longest journal replay of this node's kernel.",
        c.recovery_ms_max as f64 / 1000.0,
    );
    o.one("cohort_mount_failures_total", "counter", "Kernel mounts that failed.", c.mount_failures);
    o.one("cohort_withdraws_total", "counter", "Kernel withdraws reported.", c.withdraws);

    let s = &st.stats;
    o.one("cohort_messages_delivered_total", "counter", "Daemon messages delivered.", s.delivered);
    o.one("cohort_messages_applied_total", "counter", "Daemon messages applied.", s.applied);
    o.labelled(
        "cohort_messages_dropped_total",
        "counter",
        "Daemon messages delivered but not applied, by reason.",
        "reason",
        &[
            ("old-generation", s.dropped_old_generation),
            ("other-view", s.dropped_other_view),
            ("stale-sender", s.dropped_stale_sender),
            ("other", s.dropped_other),
        ],
    );
    o.one("cohort_messages_undecodable_total", "counter", "Delivered messages that did not decode.", s.wire_errors);

    if let Some(u) = udp {
        let v = &u.vs;
        o.one("cohort_udp_datagrams_received_total", "counter", "Datagrams read from the sockets.", u.rx_datagrams);
        o.one("cohort_udp_datagrams_sent_total", "counter", "Datagrams handed to the kernel.", u.tx_datagrams);
        o.one("cohort_udp_send_errors_total", "counter", "Datagrams the kernel refused to send.", u.tx_errors);
        o.labelled(
            "cohort_udp_datagrams_dropped_total",
            "counter",
            "Received datagrams dropped before the protocol used them, by reason.",
            "reason",
            &[
                ("unknown-source", u.rx_unknown_source),
                ("forged", v.forged),
                ("replayed", v.replayed),
                ("malformed", v.malformed),
                ("oversize", v.oversize),
                ("misdirected", v.misdirected),
                ("stale-incarnation", v.stale_incarnation),
                ("unknown-sender", v.unknown_sender),
                ("address-mismatch", v.addr_mismatch),
                ("loopback", v.loopback),
                ("out-of-range", v.out_of_range),
            ],
        );
        o.one("cohort_udp_retransmits_total", "counter", "Sequenced messages retransmitted.", v.retransmits);
        o.one("cohort_udp_naks_sent_total", "counter", "Negative acknowledgements sent.", v.naks_sent);
        o.one("cohort_udp_views_installed_total", "counter", "Views installed by the UDP protocol.", v.views_installed);
        o.one("cohort_udp_queued_messages", "gauge", "Messages waiting in the adapter's queue.", u.queued);
    }

    o.head("cohort_control_requests_total", "counter", "Control socket requests answered, by command and result.");
    for ((cmd, ok), n) in requests {
        let _ = writeln!(
            o.0,
            "cohort_control_requests_total{{command=\"{}\",result=\"{}\"}} {n}",
            escape(cmd),
            if *ok { "ok" } else { "error" }
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line is `name{labels} value` of a family declared by
    /// `# TYPE` before it; values parse as numbers.
    pub fn check_exposition(text: &str) -> Result<usize, String> {
        let mut declared = std::collections::BTreeSet::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                if !matches!(kind, "counter" | "gauge") || !declared.insert(name.to_owned()) {
                    return Err(format!("bad or repeated TYPE line: {line}"));
                }
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
            let name = series.split('{').next().unwrap_or("");
            if !declared.contains(name) {
                return Err(format!("sample before its TYPE: {line}"));
            }
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad metric name: {line}"));
            }
            value.parse::<f64>().map_err(|e| format!("{line}: {e}"))?;
            samples += 1;
        }
        Ok(samples)
    }

    #[test]
    fn renders_valid_exposition_text() {
        let st: StatusJson = serde_json::from_value(serde_json::json!({
            "schema": 1, "node": 2, "incarnation": 7, "transport": "udp", "uptime_ms": 1500,
            "generation": {"ring": 12, "epoch": 3}, "anchored": true, "quorate": true, "protocol": 1,
            "daemon": {"phase": "complete", "waits_for": null}, "stable": true,
            "members": [], "fencing": [], "groups": [], "idle_filesystems": [], "last_merge_partitions": 0,
            "stats": {"delivered": 10, "applied": 9, "dropped_old_generation": 1, "dropped_stale_sender": 0,
                      "dropped_other": 0, "wire_errors": 0}
        }))
        .unwrap();
        let c = Counters { fence_attempts: 2, fence_failures: 1, recovery_ms_sum: 1500, ..Default::default() };
        let mut req = Requests::new();
        req.insert(("status".into(), true), 4);
        req.insert(("mount".into(), false), 1);
        let udp = cohort_udp::Stats::default();
        let text = render(&st, &c, Some(&udp), &req);
        let n = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(n > 40, "{n} samples");
        for want in [
            "cohort_incarnation 7\n",
            "cohort_quorate 1\n",
            "cohort_fence_attempts_total 2\n",
            "cohort_fence_failures_total 1\n",
            "cohort_journal_recovery_seconds_sum 1.5\n",
            "cohort_messages_dropped_total{reason=\"old-generation\"} 1\n",
            "cohort_udp_datagrams_dropped_total{reason=\"forged\"} 0\n",
            "cohort_control_requests_total{command=\"mount\",result=\"error\"} 1\n",
            "cohort_control_requests_total{command=\"status\",result=\"ok\"} 4\n",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        // Without the UDP transport (corosync): no udp families.
        let text = render(&st, &c, None, &req);
        check_exposition(&text).unwrap();
        assert!(!text.contains("cohort_udp_"));
    }
}
