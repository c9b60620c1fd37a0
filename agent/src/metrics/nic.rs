use super::family::Families;
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

pub fn encode(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let Some((_, s)) = snap.latest::<NicSample>() else {
        return Ok(());
    };
    let nics = &s.interfaces;
    e.gauge(
        "nodediag_nic_info",
        "One series per network interface: class (physical has a bus device in sysfs) and kind.",
        nics.iter().map(|n| {
            let class = match n.class {
                NicClass::Physical => "physical",
                NicClass::Virtual => "virtual",
            };
            let kind = n.kind.as_deref().unwrap_or("");
            (
                [("interface", &*n.name), ("class", class), ("kind", kind)],
                1u64,
            )
        }),
    )?;
    e.gauge(
        "nodediag_nic_up",
        "1 if the interface's operstate is up (/sys/class/net/*/operstate).",
        per_nic(nics, |n| Some(&*n.operstate == "up")),
    )?;
    e.gauge(
        "nodediag_nic_carrier",
        "1 if the interface has carrier; absent when the kernel does not say (/sys/class/net/*/carrier).",
        per_nic(nics, |n| n.carrier),
    )?;
    e.gauge(
        "nodediag_nic_speed_bytes_per_second",
        "Negotiated speed of a physical NIC; absent when unknown (/sys/class/net/*/speed).",
        per_nic(nics, |n| n.speed_mbps.map(|m| m * BYTES_PER_MBIT)),
    )?;
    e.gauge(
        "nodediag_nic_best_speed_bytes_per_second",
        "Fastest full-duplex mode both ends advertise (ethtool netlink link modes).",
        per_nic(nics, |n| {
            let best = n.link_modes.as_ref()?.best_full_duplex_mbps()?;
            Some(best * BYTES_PER_MBIT)
        }),
    )?;
    e.gauge(
        "nodediag_nic_full_duplex",
        "1 for full duplex, 0 for half, absent when unknown (/sys/class/net/*/duplex).",
        per_nic(nics, |n| n.duplex.map(|d| d == Duplex::Full)),
    )?;
    e.gauge(
        "nodediag_nic_autonegotiation",
        "1 if autonegotiation is on (ethtool netlink).",
        per_nic(nics, |n| n.link_modes.as_ref()?.autoneg),
    )?;
    e.gauge(
        "nodediag_nic_mtu_bytes",
        "MTU of the interface.",
        per_nic(nics, |n| n.mtu),
    )?;
    for (name, help, get) in COUNTERS {
        e.counter(name, help, per_nic(nics, |n| get(&n.counters)))?;
    }
    Ok(())
}

/// One series per interface that has the value.
fn per_nic<'a, V: 'a>(
    nics: &'a [Nic],
    value: impl Fn(&Nic) -> Option<V> + 'a,
) -> impl Iterator<Item = ([(&'static str, &'a str); 1], V)> + 'a {
    nics.iter()
        .filter_map(move |n| Some(([("interface", &*n.name)], value(n)?)))
}
