//! nic_link_down, nic_speed_degraded, nic_half_duplex, nic_errors: physical NICs only;
//! a virtual link's speed and duplex are made up by its driver.

use super::window::{increase, span, within};
use super::{Finding, FindingDef, RuleContext, Severity};
use crate::collect::nic::{Nic, NicClass};
use crate::collect::NicSample;
use crate::flags::parse_ratio;
use crate::kernel::net_class::Duplex;
use crate::store::Snapshot;
use crate::text::round4;
use std::time::SystemTime;

pub const LINK_DOWN: FindingDef = FindingDef {
    id: "nic_link_down",
    remedy: "Check the cable, the switch port and the driver (ethtool NAME, dmesg).",
};
pub const SPEED_DEGRADED: FindingDef = FindingDef {
    id: "nic_speed_degraded",
    remedy: "Autonegotiation fell back to a lower speed: reseat or replace the cable, check the switch port.",
};
pub const HALF_DUPLEX: FindingDef = FindingDef {
    id: "nic_half_duplex",
    remedy: "Fix autonegotiation on both ends (ethtool -s NAME autoneg on); half duplex causes collisions.",
};
pub const ERRORS: FindingDef = FindingDef {
    id: "nic_errors",
    remedy: "Look at ring buffer sizes (ethtool -g), driver and firmware, and the hardware (ethtool -S NAME).",
};
pub const FINDINGS: &[&FindingDef] = &[&LINK_DOWN, &SPEED_DEGRADED, &HALF_DUPLEX, &ERRORS];

#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(next_help_heading = "NIC")]
pub struct Thresholds {
    /// nic_errors when errors + drops exceed this fraction of packets over the window.
    #[arg(long = "nic.errors-ratio", env = "NODEDIAG_NIC_ERRORS_RATIO", default_value = "0.01", value_parser = parse_ratio, value_name = "RATIO")]
    pub errors_ratio: f64,

    /// Expected speed of a physical NIC, NAME=MBPS (NAME may end in *), repeatable:
    /// nic_speed_degraded when the negotiated speed is lower.
    #[arg(long = "nic.expected-speed", env = "NODEDIAG_NIC_EXPECTED_SPEED", value_delimiter = ',', value_parser = parse_expected_speed, value_name = "NAME=MBPS")]
    pub expected_speed: Vec<ExpectedSpeed>,
}

impl Default for Thresholds {
    fn default() -> Self {
        crate::flags::defaults()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSpeed {
    pub pattern: String,
    pub mbps: u64,
}

impl ExpectedSpeed {
    pub fn matches(&self, name: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.pattern,
        }
    }
}

fn parse_expected_speed(s: &str) -> Result<ExpectedSpeed, String> {
    let (pattern, mbps) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=MBPS, e.g. eth0=25000"))?;
    let mbps = mbps
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: speed in Mb/s: {e}"))?;
    Ok(ExpectedSpeed {
        pattern: pattern.trim().to_string(),
        mbps,
    })
}

pub fn rules(snapshot: &Snapshot, t: &Thresholds, ctx: &RuleContext, out: &mut Vec<Finding>) {
    let history = snapshot.history::<NicSample>();
    let Some(&(at, latest)) = history.last() else {
        return;
    };
    let recent = within(&history, ctx.window);
    for nic in latest
        .interfaces
        .iter()
        .filter(|n| n.class == NicClass::Physical)
    {
        if let Some(f) = link_down(nic, at) {
            out.push(f);
            continue;
        }
        if nic.carrier != Some(true) {
            continue;
        }
        out.extend(speed_degraded(nic, t, at));
        out.extend(half_duplex(nic, at));
        out.extend(errors(&nic.name, recent, t, at));
    }
}

fn link_down(nic: &Nic, at: SystemTime) -> Option<Finding> {
    let name = &*nic.name;
    (nic.admin_up && nic.carrier == Some(false)).then(|| {
        Finding::new(
            &LINK_DOWN,
            Severity::Critical,
            name,
            format!("{name} is up but has no carrier"),
            at,
        )
        .with("operstate", &*nic.operstate)
        .with("carrier", 0)
    })
}

fn half_duplex(nic: &Nic, at: SystemTime) -> Option<Finding> {
    let name = &*nic.name;
    (nic.duplex == Some(Duplex::Half)).then(|| {
        Finding::new(
            &HALF_DUPLEX,
            Severity::Warning,
            name,
            format!("{name} negotiated half duplex"),
            at,
        )
        .with("duplex", "half")
        .with("speed_mbps", nic.speed_mbps)
    })
}

fn speed_degraded(nic: &Nic, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let speed = nic.speed_mbps?;
    let expected = t
        .expected_speed
        .iter()
        .find(|e| e.matches(&nic.name))
        .map(|e| e.mbps);
    let best = nic
        .link_modes
        .as_ref()
        .and_then(|m| m.best_full_duplex_mbps());
    let (target, because) = match (expected, best) {
        (Some(e), _) if speed < e => (e, "the configured expected speed"),
        (_, Some(b)) if speed < b => (b, "the best mode both ends advertise"),
        _ => return None,
    };
    let mut f = Finding::new(
        &SPEED_DEGRADED,
        Severity::Warning,
        nic.name.to_string(),
        format!(
            "{} runs at {speed} Mb/s, below {target} Mb/s ({because})",
            nic.name
        ),
        at,
    )
    .with("speed_mbps", speed)
    .with("expected_mbps", target);
    if let Some(b) = best {
        f = f.with("best_supported_mbps", b);
    }
    if let Some(autoneg) = nic.link_modes.as_ref().and_then(|m| m.autoneg) {
        f = f.with("autoneg", autoneg);
    }
    Some(f)
}

fn errors(
    name: &str,
    recent: &[(SystemTime, &NicSample)],
    t: &Thresholds,
    at: SystemTime,
) -> Option<Finding> {
    let series: Vec<_> = recent
        .iter()
        .filter_map(|(_, s)| s.interfaces.iter().find(|n| *n.name == *name))
        .map(|n| n.counters)
        .collect();
    // A counter that did not read in a sample is skipped there, not taken as 0.
    let rise = |f: fn(&crate::kernel::net_class::NicCounters) -> Option<u64>| {
        increase(series.iter().filter_map(f))
    };
    let bad = rise(|c| c.rx_errors)
        + rise(|c| c.tx_errors)
        + rise(|c| c.rx_dropped)
        + rise(|c| c.tx_dropped);
    if bad == 0 {
        return None;
    }
    let packets = rise(|c| c.rx_packets) + rise(|c| c.tx_packets);
    let ratio = if packets == 0 {
        1.0
    } else {
        bad as f64 / packets as f64
    };
    if ratio <= t.errors_ratio {
        return None;
    }
    let seconds = span(recent).as_secs();
    Some(
        Finding::new(
            &ERRORS,
            Severity::Warning,
            name,
            format!(
                "{name}: {bad} errors and drops per {packets} packets ({:.1}%) in the last {seconds}s",
                ratio * 100.0
            ),
            at,
        )
        .with("errors_and_drops_in_window", bad)
        .with("packets_in_window", packets)
        .with("ratio", round4(ratio))
        .with("rx_errors_in_window", rise(|c| c.rx_errors))
        .with("tx_errors_in_window", rise(|c| c.tx_errors))
        .with("rx_dropped_in_window", rise(|c| c.rx_dropped))
        .with("tx_dropped_in_window", rise(|c| c.tx_dropped))
        .with("window_seconds", seconds),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::testing::{run_rules, store_with};
    use crate::kernel::ethtool::LinkModes;
    use crate::kernel::net_class::NicCounters;

    fn eth(name: &str) -> Nic {
        Nic {
            name: name.into(),
            class: NicClass::Physical,
            kind: Some("ixgbe".into()),
            admin_up: true,
            operstate: "up".into(),
            carrier: Some(true),
            speed_mbps: Some(10000),
            duplex: Some(Duplex::Full),
            mtu: Some(1500),
            counters: zero(),
            link_modes: None,
            link_modes_error: None,
        }
    }

    /// Every counter read, all 0.
    fn zero() -> NicCounters {
        NicCounters {
            rx_packets: Some(0),
            tx_packets: Some(0),
            rx_errors: Some(0),
            tx_errors: Some(0),
            rx_dropped: Some(0),
            tx_dropped: Some(0),
        }
    }

    fn run_with(samples: Vec<Vec<Nic>>, thresholds: Thresholds) -> Vec<Finding> {
        let samples = samples.into_iter().map(|interfaces| NicSample {
            interfaces,
            unavailable: vec![],
        });
        run_rules(rules, &store_with(samples), &thresholds)
    }

    fn run(samples: Vec<Vec<Nic>>) -> Vec<Finding> {
        run_with(samples, Thresholds::default())
    }

    #[test]
    fn a_healthy_nic_has_no_findings() {
        assert!(run(vec![vec![eth("eth0")]]).is_empty());
    }

    #[test]
    fn no_carrier_on_an_up_nic_is_link_down_but_admin_down_is_not() {
        let mut down = eth("eth0");
        down.carrier = Some(false);
        down.operstate = "down".into();
        let f = run(vec![vec![down.clone()]]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "nic_link_down");
        down.admin_up = false;
        assert!(run(vec![vec![down]]).is_empty());
    }

    #[test]
    fn virtual_links_are_never_judged() {
        let mut veth = eth("veth0");
        veth.class = NicClass::Virtual;
        veth.carrier = Some(false);
        veth.duplex = Some(Duplex::Half);
        assert!(run(vec![vec![veth]]).is_empty());
    }

    #[test]
    fn speed_below_the_best_common_mode_or_the_expected_speed_is_degraded() {
        let mut nic = eth("eth0");
        nic.speed_mbps = Some(1000);
        nic.link_modes = Some(LinkModes {
            autoneg: Some(true),
            supported: vec!["1000baseT/Full".into(), "10000baseT/Full".into()],
            advertised: vec!["1000baseT/Full".into(), "10000baseT/Full".into()],
            partner_advertised: vec![],
        });
        let f = run(vec![vec![nic.clone()]]);
        assert_eq!(f[0].id, "nic_speed_degraded");
        assert_eq!(f[0].evidence["best_supported_mbps"], 10000);

        nic.link_modes = None;
        assert!(
            run(vec![vec![nic.clone()]]).is_empty(),
            "nothing to compare with"
        );
        let t = Thresholds {
            expected_speed: vec![ExpectedSpeed {
                pattern: "eth*".into(),
                mbps: 25000,
            }],
            ..Thresholds::default()
        };
        let f = run_with(vec![vec![nic]], t);
        assert_eq!(f[0].evidence["expected_mbps"], 25000);
    }

    #[test]
    fn half_duplex_is_flagged() {
        let mut nic = eth("eth0");
        nic.duplex = Some(Duplex::Half);
        assert_eq!(run(vec![vec![nic]])[0].id, "nic_half_duplex");
    }

    #[test]
    fn errors_over_one_percent_of_packets_in_the_window() {
        let mut a = eth("eth0");
        let mut b = eth("eth0");
        a.counters = NicCounters {
            rx_packets: Some(1000),
            ..zero()
        };
        b.counters = NicCounters {
            rx_packets: Some(2000),
            rx_errors: Some(10),
            ..zero()
        };
        assert!(
            run(vec![vec![a.clone()], vec![b.clone()]]).is_empty(),
            "exactly 1% is not over"
        );
        b.counters.tx_dropped = Some(1);
        let f = run(vec![vec![a], vec![b]]);
        assert_eq!(f[0].id, "nic_errors");
        assert_eq!(f[0].evidence["errors_and_drops_in_window"], 11);
    }

    #[test]
    fn a_thinned_window_at_one_second_still_counts_every_error_it_spans() {
        use crate::diagnose::testing::{add_samples_every, WINDOW};
        use crate::store::Store;
        use std::time::Duration;
        let samples = (0..=400u64).map(|i| {
            let mut nic = eth("eth0");
            nic.counters = NicCounters {
                rx_packets: Some(1000 * i),
                rx_errors: Some(20 * i),
                ..zero()
            };
            NicSample {
                interfaces: vec![nic],
                unavailable: vec![],
            }
        });
        let store = Store::new("n".into(), WINDOW);
        add_samples_every(&store, Duration::from_secs(1), samples);
        let kept = store.snapshot().history::<NicSample>().len();
        assert!(kept < 40, "{kept} samples kept of a 5 min window at 1 s");
        let f = run_rules(rules, &store, &Thresholds::default());
        assert_eq!(f[0].id, "nic_errors");
        let seconds = f[0].evidence["window_seconds"].as_u64().unwrap();
        assert!(seconds >= 280, "the window still spans {seconds} s");
        assert_eq!(f[0].evidence["errors_and_drops_in_window"], 20 * seconds);
        assert_eq!(f[0].evidence["packets_in_window"], 1000 * seconds);
    }
}
