use super::encode::{Encoder, Kind};
use crate::collect::nic::{Nic, NicClass};
use crate::collect::NicSample;
use crate::kernel::net_class::{Duplex, NicCounters};
use crate::store::Snapshot;

const BYTES_PER_MBIT: f64 = 125_000.0;

/// (metric name, help, which counter)
type CounterDef = (&'static str, &'static str, fn(&NicCounters) -> Option<u64>);

pub fn render(snap: &Snapshot, e: &mut Encoder) {
    let Some((_, s)) = snap.latest::<NicSample>() else {
        return;
    };
    let nics = &s.interfaces;
    e.family(
        "nodediag_nic_info",
        Kind::Gauge,
        "One series per network interface: class (physical has a bus device in sysfs) and kind.",
    );
    for n in nics {
        let class = match n.class {
            NicClass::Physical => "physical",
            NicClass::Virtual => "virtual",
        };
        e.sample(
            "nodediag_nic_info",
            &[
                ("interface", &n.name),
                ("class", class),
                ("kind", n.kind.as_deref().unwrap_or("")),
            ],
            1.0,
        );
    }
    gauge(
        e,
        nics,
        "nodediag_nic_up",
        "1 if the interface's operstate is up (/sys/class/net/*/operstate).",
        |n| Some(f64::from(u8::from(n.operstate == "up"))),
    );
    gauge(e, nics, "nodediag_nic_carrier", "1 if the interface has carrier; absent when the kernel does not say (/sys/class/net/*/carrier).",
        |n| n.carrier.map(|c| f64::from(u8::from(c))));
    gauge(
        e,
        nics,
        "nodediag_nic_speed_bytes_per_second",
        "Negotiated speed of a physical NIC; absent when unknown (/sys/class/net/*/speed).",
        |n| n.speed_mbps.map(|m| m as f64 * BYTES_PER_MBIT),
    );
    gauge(
        e,
        nics,
        "nodediag_nic_best_speed_bytes_per_second",
        "Fastest full-duplex mode both ends advertise (ethtool netlink link modes).",
        |n| {
            n.link_modes
                .as_ref()?
                .best_full_duplex_mbps()
                .map(|m| m as f64 * BYTES_PER_MBIT)
        },
    );
    gauge(
        e,
        nics,
        "nodediag_nic_full_duplex",
        "1 for full duplex, 0 for half, absent when unknown (/sys/class/net/*/duplex).",
        |n| n.duplex.map(|d| f64::from(u8::from(d == Duplex::Full))),
    );
    gauge(
        e,
        nics,
        "nodediag_nic_autonegotiation",
        "1 if autonegotiation is on (ethtool netlink).",
        |n| {
            n.link_modes
                .as_ref()?
                .autoneg
                .map(|a| f64::from(u8::from(a)))
        },
    );
    gauge(
        e,
        nics,
        "nodediag_nic_mtu_bytes",
        "MTU of the interface.",
        |n| n.mtu.map(|m| m as f64),
    );
    let counters: [CounterDef; 6] = [
        (
            "nodediag_nic_receive_packets_total",
            "Packets received",
            |c| c.rx_packets,
        ),
        (
            "nodediag_nic_transmit_packets_total",
            "Packets transmitted",
            |c| c.tx_packets,
        ),
        ("nodediag_nic_receive_errors_total", "Receive errors", |c| {
            c.rx_errors
        }),
        (
            "nodediag_nic_transmit_errors_total",
            "Transmit errors",
            |c| c.tx_errors,
        ),
        (
            "nodediag_nic_receive_drops_total",
            "Received packets dropped",
            |c| c.rx_dropped,
        ),
        (
            "nodediag_nic_transmit_drops_total",
            "Packets dropped on transmit",
            |c| c.tx_dropped,
        ),
    ];
    for (name, help, get) in counters {
        e.family(
            name,
            Kind::Counter,
            &format!("{help} (/sys/class/net/*/statistics)."),
        );
        // A counter that did not read has no series, rather than a false 0.
        for n in nics {
            if let Some(v) = get(&n.counters) {
                e.sample(name, &[("interface", &n.name)], v as f64);
            }
        }
    }
}

fn gauge(
    e: &mut Encoder,
    nics: &[Nic],
    name: &str,
    help: &str,
    value: impl Fn(&Nic) -> Option<f64>,
) {
    let values: Vec<(&str, f64)> = nics
        .iter()
        .filter_map(|n| Some((n.name.as_str(), value(n)?)))
        .collect();
    if values.is_empty() {
        return;
    }
    e.family(name, Kind::Gauge, help);
    for (iface, v) in values {
        e.sample(name, &[("interface", iface)], v);
    }
}
