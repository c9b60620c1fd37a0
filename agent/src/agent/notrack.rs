//! The agent's own exemption from connection tracking: when the conntrack table is
//! full the kernel drops every new flow, the agent's HTTP connections too, at the
//! moment an SRE needs its report. At start (`--web.notrack`, on by default) the
//! agent installs the `inet nodediag` nftables table exempting its listen port (see
//! `kernel::nft_notrack` for the rules and why they are shaped so), in its own
//! network namespace: the host's, as the DaemonSet runs with hostNetwork. At exit it
//! removes the table.
//!
//! Whatever happens, the agent starts and serves: a host without CAP_NET_ADMIN or
//! nf_tables gets an `unavailable` line with the hint, in `/api/v1/snapshot` under
//! `setup.notrack` and in the report.
//!
//! One agent per network namespace owns the table: a second one started there
//! replaces it with its own port and removes it at exit, while the first's exit,
//! finding another table (a new handle) under the name, leaves it alone. With
//! `--web.notrack=false` nothing is touched, not even a table a killed agent left
//! behind (the next start with the exemption on replaces it; `nft delete table inet
//! nodediag` removes it).

use crate::kernel::nft_notrack::{self, NotrackError, Removal, TableStatus};
use crate::store::{Setup, SetupState, Store};
use serde_json::{json, Map, Value};

/// The name under which the store and the API keep its state.
pub const SETUP: &str = "notrack";

/// What `install` put in place, for `remove` to take away.
#[must_use = "remove it when the server stops"]
pub struct Exemption {
    installed: bool,
    /// The table's handle as read back after installing: what `remove` deletes.
    handle: Option<u64>,
}

/// Installs the exemption for `port` (the bound listener's) and records the outcome.
pub async fn install(enabled: bool, port: u16, store: &Store) -> Exemption {
    let mut detail = Map::new();
    detail.insert(
        "table".into(),
        json!(format!("inet {}", nft_notrack::TABLE)),
    );
    if !enabled {
        store.set_setup(SETUP, setup(SetupState::Disabled, detail));
        return Exemption {
            installed: false,
            handle: None,
        };
    }
    // A blocking netlink exchange: never on an async worker.
    let outcome = tokio::task::spawn_blocking(move || {
        nft_notrack::install(&[port]).map(|()| nft_notrack::status())
    })
    .await;
    // The table is in place (maybe not as asked) once the install went through.
    let installed = matches!(outcome, Ok(Ok(_)));
    let handle = match &outcome {
        Ok(Ok(Ok(Some(table)))) => table.handle,
        _ => None,
    };
    let state = match outcome {
        Ok(Ok(Ok(Some(table)))) => checked(&table, port, &mut detail),
        Ok(Ok(Ok(None))) => SetupState::Error {
            message: "the table was installed but the kernel does not list it".into(),
        },
        Ok(Ok(Err(e))) => SetupState::Error {
            message: format!("the table was installed but reading it back failed: {e}"),
        },
        Ok(Err(e)) => failed(&e),
        Err(e) => SetupState::Error {
            message: format!("installing the table did not finish: {e}"),
        },
    };
    match &state {
        SetupState::Installed => {
            tracing::info!(port, table = detail["table"].as_str().unwrap_or_default(), "HTTP port exempt from connection tracking")
        }
        SetupState::Unavailable { what, hint } => tracing::warn!(
            port,
            "HTTP port not exempt from connection tracking ({what}: {hint}): the agent may not answer while the conntrack table is full"
        ),
        SetupState::Error { message } => tracing::error!(
            port,
            %message,
            "HTTP port not exempt from connection tracking"
        ),
        SetupState::Disabled => {}
    }
    store.set_setup(SETUP, setup(state, detail));
    Exemption { installed, handle }
}

/// Removes the table `install` put in place, unless another agent has replaced it
/// since; a no-op when nothing was installed. A table whose handle could not be read
/// back is removed by name.
pub async fn remove(exemption: Exemption) {
    if !exemption.installed {
        return;
    }
    let handle = exemption.handle;
    let removed = tokio::task::spawn_blocking(move || match handle {
        Some(h) => nft_notrack::remove_installed(h),
        None => nft_notrack::remove().map(|()| Removal::Removed),
    })
    .await;
    match removed {
        Ok(Ok(Removal::Removed)) => tracing::info!("notrack table removed"),
        Ok(Ok(Removal::NotOurs)) => tracing::info!(
            "notrack table left in place: another agent has installed its own since this one started"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not remove the notrack table"),
        Err(e) => tracing::warn!(error = %e, "removing the notrack table did not finish"),
    }
}

/// Installed only when the kernel lists every rule for the port.
fn checked(table: &TableStatus, port: u16, detail: &mut Map<String, Value>) -> SetupState {
    let ports = table.exempt_ports();
    detail.insert("ports".into(), json!(ports));
    detail.insert(
        "chains".into(),
        json!(table.chains.iter().map(|c| &c.name).collect::<Vec<_>>()),
    );
    detail.insert("rules".into(), json!(table.rules.len()));
    if ports.contains(&port) {
        SetupState::Installed
    } else {
        SetupState::Error {
            message: format!(
                "the kernel lists the table without every rule for port {port}: {} rules, {} of another shape",
                table.rules.len(),
                table.other_rules
            ),
        }
    }
}

fn failed(e: &NotrackError) -> SetupState {
    match e {
        NotrackError::PermissionDenied(_) => SetupState::Unavailable {
            what: e.to_string(),
            hint: e.hint().into(),
        },
        NotrackError::Unavailable { .. } => SetupState::Unavailable {
            what: e.to_string(),
            hint: e.hint().into(),
        },
        NotrackError::Other { .. } => SetupState::Error {
            message: e.to_string(),
        },
    }
}

fn setup(state: SetupState, detail: Map<String, Value>) -> Setup {
    Setup { state, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_capability_is_unavailable_with_the_hint_not_an_error() {
        let e = NotrackError::PermissionDenied(std::io::Error::from_raw_os_error(libc::EPERM));
        match failed(&e) {
            SetupState::Unavailable { what, hint } => {
                assert!(what.contains("CAP_NET_ADMIN"), "{what}");
                assert!(hint.contains("NET_ADMIN"), "{hint}");
            }
            other => panic!("{other:?}"),
        }
        let e = NotrackError::Other {
            context: "x".into(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        assert!(matches!(failed(&e), SetupState::Error { .. }));
    }

    #[test]
    fn the_setup_serializes_flat_with_its_state() {
        let mut d = Map::new();
        d.insert("table".into(), json!("inet nodediag"));
        d.insert("ports".into(), json!([10360]));
        let v = serde_json::to_value(setup(SetupState::Installed, d)).unwrap();
        assert_eq!(
            v,
            json!({"state": "installed", "table": "inet nodediag", "ports": [10360]})
        );
        let v = serde_json::to_value(setup(
            SetupState::Unavailable {
                what: "nf_tables".into(),
                hint: "modprobe nf_tables".into(),
            },
            Map::new(),
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"state": "unavailable", "what": "nf_tables", "hint": "modprobe nf_tables"})
        );
    }
}
