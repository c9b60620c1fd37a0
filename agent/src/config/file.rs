//! The optional config file (YAML, or TOML when it ends in .toml): its keys are the
//! long flags, flat (`path.procfs: /host/proc`) or nested (`path: {procfs: ...}`), and
//! it fills only what neither the command line nor the environment set.

use super::{Cli, ConfigError};
use clap::parser::ValueSource;
use clap::CommandFactory;
use std::ffi::OsString;
use std::path::Path;

/// The command line with the file's entries inserted after the subcommand, where the
/// command line and environment do not already set them.
pub(super) fn merge(
    args: &[OsString],
    sub: &str,
    path: &Path,
) -> Result<Vec<OsString>, ConfigError> {
    let file_err = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let entries = parse(path, &text).map_err(&file_err)?;

    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    let sub_matches = matches
        .subcommand_matches(sub)
        .expect("subcommand parsed above");
    let sub_cmd = command.find_subcommand(sub).expect("subcommand exists");

    let mut extra: Vec<OsString> = Vec::new();
    for (key, values) in entries {
        let arg = sub_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| {
                file_err(format!(
                    "unknown key {key:?} (keys are the long flags of `nodediag {sub}`, see --help)"
                ))
            })?;
        let from_cli_or_env = matches!(
            sub_matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if from_cli_or_env {
            continue;
        }
        let is_flag = !arg.get_action().takes_values();
        for value in values {
            match (is_flag, value.as_str()) {
                (true, "true") => extra.push(format!("--{key}").into()),
                (true, "false") => {}
                (true, other) => {
                    return Err(file_err(format!(
                        "key {key:?} is a switch: expected true or false, got {other:?}"
                    )))
                }
                (false, v) => extra.push(format!("--{key}={v}").into()),
            }
        }
    }
    let mut merged: Vec<OsString> = vec![args[0].clone(), sub.into()];
    merged.extend(extra);
    let sub_pos = args
        .iter()
        .position(|a| a == sub)
        .expect("subcommand present");
    merged.extend(args[sub_pos + 1..].iter().cloned());
    Ok(merged)
}

/// Flattens a YAML or TOML document into (dotted key, values) pairs.
fn parse(path: &std::path::Path, text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let value: serde_json::Value = if path.extension().is_some_and(|e| e == "toml") {
        let v: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
        serde_json::to_value(v).map_err(|e| e.to_string())?
    } else {
        let v: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        serde_json::to_value(v).map_err(|e| e.to_string())?
    };
    let mut out = Vec::new();
    match value {
        serde_json::Value::Object(map) => flatten("", &map, &mut out)?,
        serde_json::Value::Null => {}
        other => return Err(format!("expected a mapping of keys, got {other}")),
    }
    Ok(out)
}

fn flatten(
    prefix: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, Vec<String>)>,
) -> Result<(), String> {
    use serde_json::Value;
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let scalar = |v: &Value| -> Result<String, String> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("key {key:?}: unsupported value {other}")),
            }
        };
        match v {
            Value::Object(inner) => flatten(&key, inner, out)?,
            Value::Array(items) => {
                let values = items.iter().map(scalar).collect::<Result<_, _>>()?;
                out.push((key, values));
            }
            Value::Null => {}
            other => out.push((key.clone(), vec![scalar(other)?])),
        }
    }
    Ok(())
}
