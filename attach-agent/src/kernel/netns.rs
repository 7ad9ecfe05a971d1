//! Network namespaces: creating and removing named ones (what `ip netns add/delete` does),
//! opening any by path, and the resolv.conf/hosts of agent-made ones under /etc/netns.

use crate::durable::Flush;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where named namespaces live, as iproute2 keeps them.
pub const NETNS_RUN_DIR: &str = "/run/netns";
/// Per-namespace files `ip netns exec` bind-mounts over /etc.
pub const NETNS_ETC_DIR: &str = "/etc/netns";

fn cstr(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Make /run/netns a shared mount point, as iproute2 does, so a namespace bind-mounted there
/// is visible in other mount namespaces.
fn prepare_run_dir() -> io::Result<()> {
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(dir)?;
    let d = cstr(dir)?;
    let none = c"none";
    // SAFETY: plain mount(2) calls with valid NUL-terminated strings.
    unsafe {
        if libc::mount(
            none.as_ptr(),
            d.as_ptr(),
            none.as_ptr(),
            libc::MS_SHARED | libc::MS_REC,
            std::ptr::null(),
        ) == 0
        {
            return Ok(());
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::last_os_error());
        }
        // Not a mount point yet: bind it onto itself, then make it shared.
        check(libc::mount(
            d.as_ptr(),
            d.as_ptr(),
            none.as_ptr(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            none.as_ptr(),
            d.as_ptr(),
            none.as_ptr(),
            libc::MS_SHARED | libc::MS_REC,
            std::ptr::null(),
        ))
    }
}

/// The path of the named namespace `name`.
pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Create the named namespace `name` (an empty network namespace with only `lo`). Returns its
/// path.
///
/// Anything already at `/run/netns/NAME` — a namespace someone else made, a file, a symlink —
/// is refused with `AlreadyExists`: adopting it would let removing the container unmount a
/// namespace and delete `/etc/netns/NAME` the agent never owned (and a symlink there would be
/// followed as root). The path is created with O_EXCL, so a race cannot slip one in either.
pub fn create_named(name: &str) -> io::Result<PathBuf> {
    let path = named_path(name);
    etc_dir(name)?;
    if path.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and was not made by the agent (give it with --netns to use it)",
                path.display()
            ),
        ));
    }
    prepare_run_dir()?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let target = path.clone();
    // unshare() changes the calling thread's namespace: do it on a thread of its own, which
    // ends right after, so no other work ever runs in the new namespace by accident.
    let result = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: unshare and mount with valid arguments; this thread does nothing else.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNET))?;
            let src = cstr(Path::new("/proc/thread-self/ns/net"))?;
            let dst = cstr(&target)?;
            check(libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                c"none".as_ptr(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
        }
        // `lo` up now, as a container runtime would, rather than on every connect.
        loopback_up()
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Bring `lo` of the calling thread's network namespace up (SIOCSIFFLAGS: no netlink
/// connection needed on this short-lived thread).
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket and two ioctls on a zeroed ifreq naming "lo"; the fd is closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let r = check(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr)).and_then(|()| {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr))
        });
        libc::close(fd);
        r
    }
}

/// Remove a named namespace made by [`create_named`] and its /etc/netns files. Missing is fine.
pub fn remove_named(name: &str) -> io::Result<()> {
    let path = named_path(name);
    if path.exists() {
        let p = cstr(&path)?;
        // SAFETY: umount2 with a valid path.
        unsafe {
            libc::umount2(p.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW);
        }
        std::fs::remove_file(&path)?;
    }
    let etc = etc_dir(name)?;
    if etc.exists() {
        std::fs::remove_dir_all(etc)?;
    }
    Ok(())
}

/// Whether `path` is a network namespace (nsfs file).
pub fn is_netns(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e736673;
    let Ok(p) = cstr(path) else { return false };
    // SAFETY: statfs into a zeroed struct.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(p.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC
    }
}

/// Whether `path` is the host's own network namespace — the agent's own (where its bridges
/// are), or PID 1's when that can be read: handing it to a container would give that container
/// the host's networking.
pub fn is_host_netns(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| is_host_file(&f))
}

/// Open a namespace by path (/run/netns/X, /proc/PID/ns/net). The host's own namespace is
/// refused here too, on the opened file: a `/proc/PID/ns/net` checked at create may name a
/// host process by the time a container starts (PIDs are reused).
pub fn open(path: &Path) -> io::Result<File> {
    if !is_netns(path) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a network namespace", path.display()),
        ));
    }
    let file = File::open(path)?;
    if is_host_file(&file) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is the host's own network namespace", path.display()),
        ));
    }
    Ok(file)
}

/// Whether an open namespace file is the host's own (see [`is_host_netns`]).
fn is_host_file(file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = file.metadata() else {
        return false;
    };
    ["/proc/self/ns/net", "/proc/1/ns/net"].iter().any(|host| {
        std::fs::metadata(host).is_ok_and(|h| h.dev() == ns.dev() && h.ino() == ns.ino())
    })
}

/// Run `f` on a fresh thread that has entered the namespace `ns`.
pub fn run_in<T: Send + 'static>(
    ns: &File,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let fd = ns.try_clone()?;
    std::thread::spawn(move || {
        // SAFETY: setns with an fd we own, on a thread that ends after `f`.
        check(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) })?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("netns thread panicked"))?
}

/// /etc/netns/NAME, refused when it is a symlink (writing or removing through one would
/// reach wherever it points, as root).
fn etc_dir(name: &str) -> io::Result<PathBuf> {
    let dir = Path::new(NETNS_ETC_DIR).join(name);
    if dir
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is a symlink; not following it", dir.display()),
        ));
    }
    Ok(dir)
}

/// What a container's /etc files say besides its gateways and its own addresses: `--dns-search`
/// domains, `--dns-option`s and `--add-host` lines, already checked (no whitespace or
/// newline can reach the files).
#[derive(Debug, Default)]
pub struct EtcExtras<'a> {
    pub search: &'a [String],
    pub options: &'a [String],
    pub hosts: Vec<(IpAddr, &'a str)>,
}

/// Write /etc/netns/NAME/resolv.conf (the gateways of the container's networks) and
/// /etc/netns/NAME/hosts, atomically, so `ip netns exec NAME` resolves through the agent.
pub fn write_etc(
    name: &str,
    nameservers: &[IpAddr],
    hostname: &str,
    own: &[IpAddr],
    extras: &EtcExtras,
) -> io::Result<()> {
    let dir = etc_dir(name)?;
    std::fs::create_dir_all(&dir)?;
    let mut resolv = String::from("# written by attach-agent\n");
    for ns in nameservers {
        resolv.push_str(&format!("nameserver {ns}\n"));
    }
    // "." means no search domain (as Docker takes it): no line for it.
    let search: Vec<&str> = extras
        .search
        .iter()
        .map(String::as_str)
        .filter(|d| *d != ".")
        .collect();
    if !search.is_empty() {
        resolv.push_str(&format!("search {}\n", search.join(" ")));
    }
    // ndots:0 (as Docker's embedded DNS sets it) unless the user chose one.
    let mut options: Vec<&str> = extras.options.iter().map(String::as_str).collect();
    if !options.iter().any(|o| o.starts_with("ndots:")) {
        options.insert(0, "ndots:0");
    }
    resolv.push_str(&format!("options {}\n", options.join(" ")));
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (ip, host) in &extras.hosts {
        hosts.push_str(&format!("{ip}\t{host}\n"));
    }
    for a in own {
        hosts.push_str(&format!("{a}\t{hostname}\n"));
    }
    // Regenerated from the state at every start: not worth two fsyncs each.
    write_in_place(&dir.join("resolv.conf"), resolv.as_bytes())?;
    write_in_place(&dir.join("hosts"), hosts.as_bytes())
}

/// Overwrite a resolv.conf or hosts file in place, with one `pwrite` of the whole text,
/// padded with a comment line to the old length when shorter (so the file never shrinks and
/// a reader sees the old text or the new, as far as one write goes). In place as Docker and
/// Podman write theirs: `ip netns exec` bind-mounts these files, so a process it started
/// keeps the inode it was given, and sees the new text only if that inode is written; and a
/// rename frees the old file's blocks, which on a disk mounted with `discard` costs a
/// synchronous discard (~0.19 ms a file measured here). Anything but a regular file there (a
/// symlink, a FIFO) is replaced by a rename, never followed or opened for writing.
fn write_in_place(path: &Path, text: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
    // A plain file of one link, or nothing yet: anything else is never opened for writing
    // (a device or a FIFO would be, before its type could be checked on the open file).
    let plain = |m: &std::fs::Metadata| m.is_file() && m.nlink() == 1;
    match path.symlink_metadata() {
        Ok(m) if !plain(&m) => return crate::durable::replace(path, text, Flush::None),
        _ => {}
    }
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let file = match opened {
        Ok(f) if f.metadata().is_ok_and(|m| plain(&m)) => f,
        _ => return crate::durable::replace(path, text, Flush::None),
    };
    let old_len = file.metadata()?.len() as usize;
    let mut bytes = text.to_vec();
    if old_len > bytes.len() {
        let pad = old_len - bytes.len();
        if pad >= 2 {
            bytes.push(b'#');
            bytes.resize(old_len - 1, b' ');
        }
        bytes.push(b'\n');
    }
    file.write_all_at(&bytes, 0)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_namespace_is_refused_when_opened() {
        let e = open(Path::new("/proc/self/ns/net")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("host's own"), "{e}");
        assert!(is_host_netns(Path::new("/proc/thread-self/ns/net")));
    }

    #[test]
    fn etc_files_are_written_in_place_and_symlinks_replaced() {
        let dir = std::env::temp_dir().join(format!("netns-etc-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        write_in_place(&path, b"nameserver 10.0.0.1\nnameserver 10.0.1.1\n").unwrap();
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&path).unwrap().ino();
        write_in_place(&path, b"nameserver 10.0.0.1\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "the same file"
        );
        assert_eq!(text.len(), 40, "never shrinks: {text:?}");
        assert!(text.starts_with("nameserver 10.0.0.1\n#"), "{text:?}");
        assert!(text.ends_with(" \n"), "{text:?}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1);
        // One byte shorter: an empty line.
        write_in_place(&path, &text.as_bytes()[..39]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 40);
        // A symlink is replaced, not followed.
        let target = dir.join("target");
        std::fs::write(&target, "untouched").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_in_place(&path, b"nameserver 10.0.0.1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
