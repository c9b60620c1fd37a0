//! A NIC's sysfs file that is there but does not read (a directory where a counter
//! should be, as EIO would) or does not parse (garbage) leaves its value absent and
//! names the file as unreadable in the sample: never a counter of 0, which the error
//! rule would read as a reset, nor an attribute quietly missing.

use nodediag::collect::nic::{NicClass, NicCollector};
use nodediag::collect::Collector;
use nodediag::host::HostRoot;
use std::path::Path;

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A physical NIC (it has a `device`) with every attribute and counter readable.
fn healthy_nic(sys: &Path, name: &str) -> std::path::PathBuf {
    let dir = sys.join("class/net").join(name);
    std::fs::create_dir_all(dir.join("device")).unwrap();
    for (file, text) in [
        ("ifindex", "2\n"),
        ("iflink", "2\n"),
        ("flags", "0x1003\n"),
        ("operstate", "up\n"),
        ("carrier", "1\n"),
        ("speed", "10000\n"),
        ("duplex", "full\n"),
        ("mtu", "1500\n"),
        ("type", "1\n"),
    ] {
        write(&dir, file, text);
    }
    for c in [
        "rx_packets",
        "tx_packets",
        "rx_errors",
        "tx_errors",
        "rx_dropped",
        "tx_dropped",
    ] {
        write(&dir, &format!("statistics/{c}"), "7\n");
    }
    dir
}

#[test]
fn unreadable_counters_and_attributes_are_absent_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = tmp.path().join("sys");
    healthy_nic(&sys, "eth0");
    let bad = healthy_nic(&sys, "eth1");
    std::fs::remove_file(bad.join("statistics/rx_errors")).unwrap();
    std::fs::create_dir(bad.join("statistics/rx_errors")).unwrap();
    write(&bad, "statistics/tx_dropped", "lots\n");
    write(&bad, "speed", "\u{0}\u{0}\n");
    write(&bad, "mtu", "-\n");
    let root = HostRoot {
        sys,
        ..HostRoot::default()
    };

    let sample = NicCollector::new(root, false).collect().unwrap();
    let eth0 = &sample.interfaces[0];
    let eth1 = &sample.interfaces[1];
    assert_eq!((&*eth0.name, &*eth1.name), ("eth0", "eth1"));
    assert_eq!(eth1.class, NicClass::Physical);
    assert_eq!(eth0.counters.rx_errors, Some(7));
    assert_eq!(eth0.speed_mbps, Some(10000));

    assert_eq!(eth1.counters.rx_errors, None, "not 0");
    assert_eq!(eth1.counters.tx_dropped, None, "not 0");
    assert_eq!(eth1.counters.rx_packets, Some(7), "the others still read");
    assert_eq!((eth1.speed_mbps, eth1.mtu), (None, None));
    assert_eq!(eth1.duplex, eth0.duplex);

    let mut named: Vec<String> = sample
        .unavailable
        .iter()
        .map(|u| {
            assert!(u.unreadable, "{u:?} is a defect, not a missing feature");
            let file = Path::new(&u.what).strip_prefix(&bad).unwrap_or_else(|_| {
                panic!("{} is not a file of eth1", u.what);
            });
            file.display().to_string()
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            "mtu",
            "speed",
            "statistics/rx_errors",
            "statistics/tx_dropped"
        ]
    );
    let hint = |f: &str| {
        sample
            .unavailable
            .iter()
            .find(|u| u.what.ends_with(f))
            .map(|u| u.hint.clone())
            .unwrap()
    };
    assert!(
        hint("tx_dropped").contains("lots"),
        "{}",
        hint("tx_dropped")
    );
    assert!(
        hint("rx_errors").to_lowercase().contains("directory"),
        "{}",
        hint("rx_errors")
    );
}

#[test]
fn a_link_that_is_down_declines_its_speed_without_a_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = tmp.path().join("sys");
    let dir = healthy_nic(&sys, "eth0");
    write(&dir, "flags", "0x1002\n");
    write(&dir, "operstate", "down\n");
    // What the kernel prints for a link without a known speed or duplex.
    write(&dir, "speed", "-1\n");
    write(&dir, "duplex", "unknown\n");
    std::fs::remove_file(dir.join("carrier")).unwrap();
    let root = HostRoot {
        sys,
        ..HostRoot::default()
    };
    let sample = NicCollector::new(root, false).collect().unwrap();
    let eth0 = &sample.interfaces[0];
    assert!(!eth0.admin_up);
    assert_eq!(
        (eth0.speed_mbps, eth0.duplex, eth0.carrier),
        (None, None, None)
    );
    assert!(sample.unavailable.is_empty(), "{:?}", sample.unavailable);
}
