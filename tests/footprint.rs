//! What the agent binary loads beside itself. glibc's libm is not among it: the one
//! function nodediag took from it, `pow`, is built in (agent/src/memory.rs), and
//! loading libm for it left about 0.5 MiB resident.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_binary_does_not_load_libm() {
    let bin = env!("CARGO_BIN_EXE_nodediag");
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .expect("running ldd (Debian's libc-bin)");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd {bin}: {listed}");
    assert!(
        listed.contains("libc.so"),
        "ldd {bin} lists no libc: {listed}"
    );
    assert!(
        !listed.contains("libm.so"),
        "{bin} loads libm: a function of it is imported that the binary does not build in (nm -D --undefined-only {bin}):\n{listed}"
    );
}
