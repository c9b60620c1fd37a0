//! Capabilities are per thread on Linux: a test thread can give one up and show
//! what the agent does without it, while the rest of the test process keeps it.

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
pub const CAP_NET_ADMIN: u32 = 12;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops `cap` from the calling thread's effective and permitted sets, for good:
/// call it only on a thread made for the purpose.
pub fn drop_from_this_thread(cap: u32) {
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and the two data structs v3 expects.
    unsafe {
        let rc = libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr());
        assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective &= !bit;
        data[word].permitted &= !bit;
        let rc = libc::syscall(libc::SYS_capset, &mut header, data.as_ptr());
        assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
    }
}
