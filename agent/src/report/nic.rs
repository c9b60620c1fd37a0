//! The nic collector's line in the report.

use crate::collect::nic::{Nic, NicClass, NicSample};

pub fn summary(s: &NicSample) -> String {
    let physical: Vec<&Nic> = s
        .interfaces
        .iter()
        .filter(|n| n.class == NicClass::Physical)
        .collect();
    let described: Vec<String> = physical
        .iter()
        .map(|n| {
            let speed = n
                .speed_mbps
                .map(|s| format!("{s}Mb/s"))
                .unwrap_or_else(|| "speed unknown".into());
            format!("{} {} {}", n.name, n.operstate, speed)
        })
        .collect();
    format!(
        "{} interfaces, {} physical{}{}",
        s.interfaces.len(),
        physical.len(),
        if described.is_empty() { "" } else { ": " },
        described.join(", ")
    )
}
