//! System-wide limits the kernel enforces per node: tasks vs `kernel.pid_max` and
//! `kernel.threads-max`, open files vs `fs.file-max`.

use serde::Serialize;

/// The 4th field of `/proc/loadavg`, `running/total`: total is the number of tasks
/// (threads) on the node, each holding a PID.
pub fn parse_loadavg_tasks(text: &str) -> Result<u64, String> {
    let field = text
        .split_whitespace()
        .nth(3)
        .ok_or_else(|| format!("{:?}: expected 5 fields", text.trim()))?;
    let (_, total) = field
        .split_once('/')
        .ok_or_else(|| format!("{field:?}: expected running/total"))?;
    total
        .parse()
        .map_err(|e| format!("{field:?}: task count: {e}"))
}

/// `fs.file-nr`: allocated, allocated-but-unused (always 0 since 2.6), max.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileNr {
    pub allocated: u64,
    pub max: u64,
}

pub fn parse_file_nr(text: &str) -> Result<FileNr, String> {
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{:?}: {e}", text.trim()))?;
    match fields[..] {
        [allocated, unused, max] => Ok(FileNr {
            allocated: allocated.saturating_sub(unused),
            max,
        }),
        _ => Err(format!("{:?}: expected 3 numbers", text.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_gives_the_task_count() {
        assert_eq!(parse_loadavg_tasks("0.77 0.98 0.53 1/88 26497\n"), Ok(88));
        assert!(parse_loadavg_tasks("0.77 0.98\n").is_err());
        assert!(parse_loadavg_tasks("0.77 0.98 0.53 188 26497\n").is_err());
    }

    #[test]
    fn file_nr_subtracts_unused_handles() {
        assert_eq!(
            parse_file_nr("450\t0\t2466170\n"),
            Ok(FileNr {
                allocated: 450,
                max: 2466170
            })
        );
        // Linux 2.4 still reported free handles in the middle field.
        assert_eq!(parse_file_nr("900 100 1000").unwrap().allocated, 800);
        // fs.file-max defaults to LONG_MAX on 64-bit kernels since 5.1 when memory allows.
        assert_eq!(
            parse_file_nr("1 0 9223372036854775807").unwrap().max,
            9223372036854775807
        );
        assert!(parse_file_nr("1 2").is_err());
        assert!(parse_file_nr("a b c").is_err());
    }
}
