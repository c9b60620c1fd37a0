use super::family::Families;
use super::steady::SteadyFamilies;
use crate::collect::nic::{Nic, NicClass};
use crate::collect::NicSample;
use crate::kernel::net_class::{Duplex, NicCounters};
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

const BYTES_PER_MBIT: u64 = 125_000;

/// (metric name, help, which counter)
type CounterDef = (&'static str, &'static str, fn(&NicCounters) -> Option<u64>);

const COUNTERS: [CounterDef; 6] = [
    (
        "nodediag_nic_receive_packets_total",
        "Packets received (/sys/class/net/*/statistics).",
        |c| c.rx_packets,
    ),
    (
        "nodediag_nic_transmit_packets_total",
        "Packets transmitted (/sys/class/net/*/statistics).",
        |c| c.tx_packets,
    ),
    (
        "nodediag_nic_receive_errors_total",
        "Receive errors (/sys/class/net/*/statistics).",
        |c| c.rx_errors,
    ),
    (
        "nodediag_nic_transmit_errors_total",
        "Transmit errors (/sys/class/net/*/statistics).",
        |c| c.tx_errors,
    ),
    (
        "nodediag_nic_receive_drops_total",
        "Received packets dropped (/sys/class/net/*/statistics).",
        |c| c.rx_dropped,
    ),
    (
        "nodediag_nic_transmit_drops_total",
        "Packets dropped on transmit (/sys/class/net/*/statistics).",
        |c| c.tx_dropped,
    ),
];

/// The counters: they change every round.
pub fn encode(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let Some((_, s)) = snap.latest::<NicSample>() else {
        return Ok(());
    };
    for (name, help, get) in COUNTERS {
        let series = s
            .interfaces
            .iter()
            .filter_map(|n| Some(([("interface", &*n.name)], get(&n.counters)?)));
        e.counter(name, help, series)?;
    }
    Ok(())
}

/// What the families of an interface's kind and link read: they change when a link
/// goes up or down, is renegotiated or appears.
#[derive(Hash)]
pub struct Link<'a> {
    name: &'a str,
    class: &'static str,
    kind: &'a str,
    up: bool,
    carrier: Option<bool>,
    speed: Option<u64>,
    best_speed: Option<u64>,
    full_duplex: Option<bool>,
    autoneg: Option<bool>,
    mtu: Option<u64>,
}

impl<'a> Link<'a> {
    fn of(n: &'a Nic) -> Self {
        Link {
            name: &n.name,
            class: match n.class {
                NicClass::Physical => "physical",
                NicClass::Virtual => "virtual",
            },
            kind: n.kind.as_deref().unwrap_or(""),
            up: &*n.operstate == "up",
            carrier: n.carrier,
            speed: n.speed_mbps.map(|m| m * BYTES_PER_MBIT),
            best_speed: n
                .link_modes
                .as_ref()
                .and_then(|m| m.best_full_duplex_mbps())
                .map(|m| m * BYTES_PER_MBIT),
            full_duplex: n.duplex.map(|d| d == Duplex::Full),
            autoneg: n.link_modes.as_ref().and_then(|m| m.autoneg),
            mtu: n.mtu,
        }
    }
}

/// Every interface's kind and link settings.
pub struct Links;

impl SteadyFamilies for Links {
    type Rows<'a> = Vec<Link<'a>>;

    fn rows(snap: &Snapshot) -> Option<Vec<Link<'_>>> {
        let (_, s) = snap.latest::<NicSample>()?;
        Some(s.interfaces.iter().map(Link::of).collect())
    }

    fn encode(links: Vec<Link<'_>>, e: &mut DescriptorEncoder) -> fmt::Result {
        e.gauge(
            "nodediag_nic_info",
            "One series per network interface: class (physical has a bus device in sysfs) and kind.",
            links.iter().map(|l| {
                (
                    [("interface", l.name), ("class", l.class), ("kind", l.kind)],
                    1u64,
                )
            }),
        )?;
        e.gauge(
            "nodediag_nic_up",
            "1 if the interface's operstate is up (/sys/class/net/*/operstate).",
            per_link(&links, |l| Some(l.up)),
        )?;
        e.gauge(
            "nodediag_nic_carrier",
            "1 if the interface has carrier; absent when the kernel does not say (/sys/class/net/*/carrier).",
            per_link(&links, |l| l.carrier),
        )?;
        e.gauge(
            "nodediag_nic_speed_bytes_per_second",
            "Negotiated speed of a physical NIC; absent when unknown (/sys/class/net/*/speed).",
            per_link(&links, |l| l.speed),
        )?;
        e.gauge(
            "nodediag_nic_best_speed_bytes_per_second",
            "Fastest full-duplex mode both ends advertise (ethtool netlink link modes).",
            per_link(&links, |l| l.best_speed),
        )?;
        e.gauge(
            "nodediag_nic_full_duplex",
            "1 for full duplex, 0 for half, absent when unknown (/sys/class/net/*/duplex).",
            per_link(&links, |l| l.full_duplex),
        )?;
        e.gauge(
            "nodediag_nic_autonegotiation",
            "1 if autonegotiation is on (ethtool netlink).",
            per_link(&links, |l| l.autoneg),
        )?;
        e.gauge(
            "nodediag_nic_mtu_bytes",
            "MTU of the interface.",
            per_link(&links, |l| l.mtu),
        )
    }
}

/// One series per interface that has the value.
fn per_link<'a, V: 'a>(
    links: &'a [Link<'a>],
    value: impl Fn(&Link) -> Option<V> + 'a,
) -> impl Iterator<Item = ([(&'static str, &'a str); 1], V)> + 'a {
    links
        .iter()
        .filter_map(move |l| Some(([("interface", l.name)], value(l)?)))
}
