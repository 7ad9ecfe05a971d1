//! A full disk under the state directory: every operation that must write fails with an error
//! naming the file and the cause, and leaves the files, the state, the kernel and DNS as they
//! were; once space is freed everything works again. And an object written since the agent
//! started keeps its old file as the next write's spare (`durable::replace_recycling`), so
//! changes to it need no new space: they succeed on the full disk, and survive a crash.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{report, Env};

/// A small tmpfs mounted on a directory of the test's own, unmounted on drop (also when the
/// test fails).
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount");
        assert!(st.success(), "mount a tmpfs on {}", at.display());
        SmallDisk {
            at: at.to_path_buf(),
        }
    }

    /// Take every free byte: a file grown until the kernel says the disk is full.
    fn fill(&self) -> PathBuf {
        let path = self.at.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0]).is_ok() {}
        let e = f.write_all(&[0]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let path = CString::new(self.at.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; a lazy unmount of the tmpfs this guard mounted.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Every file under `dir` (relative name → bytes), the filler excepted.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n != "filler") {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// What an operation must not change when it fails: the files, what the API shows, the
/// links on the host and in the containers, and DNS.
#[derive(Debug, PartialEq)]
struct Seen {
    files: BTreeMap<String, Vec<u8>>,
    networks: String,
    containers: String,
    links: Vec<String>,
    inside: Vec<Vec<String>>,
    dns: Vec<Vec<String>>,
}

#[test]
fn a_full_disk_changes_nothing_and_freed_space_heals() {
    let mut env = Env::without_daemon();
    let disk = SmallDisk::mount(&env.state_dir(), "2m");
    env.start_daemon();
    let (web, db, idle) = (env.name("web"), env.name("db"), env.name("idle"));
    env.ok(&["network", "create", "--subnet", &env.subnet(1), "front"]);
    env.ok(&["network", "create", "--subnet", &env.subnet(2), "back"]);
    env.ok(&[
        "run",
        "--name",
        &web,
        "--network",
        "front",
        "--alias",
        "www",
        "busybox",
    ]);
    env.ok(&["run", "--name", &db, "--network", "front", "busybox"]);
    env.ok(&["network", "connect", "back", &db]);
    env.ok(&[
        "container",
        "create",
        "--name",
        &idle,
        "--network",
        "front",
        "busybox",
    ]);
    let (paused, spare) = (env.name("paused"), env.name("spare"));
    env.ok(&["run", "--name", &paused, "--network", "back", "busybox"]);
    env.ok(&["container", "pause", &paused]);
    env.ok(&["container", "create", "--name", &spare, "busybox"]);
    // An agent started on a disk that then fills: no object has a spare yet (the start
    // removes them with the other dot files), so every change needs space it cannot have.
    env.kill_daemon();
    env.start_daemon();
    let seen = || Seen {
        files: files(&env.state_dir()),
        networks: env.ok(&["network", "inspect", "front", "back"]),
        containers: env.ok(&["container", "inspect", &web, &db, &idle, &paused]),
        links: env.links(),
        inside: [&web, &db].iter().map(|c| env.links_in(c)).collect(),
        dns: vec![
            env.getent(&db, "www"),
            env.getent(&web, &db),
            env.getent(&db, &web),
        ],
    };
    let before = seen();
    assert_eq!(before.dns[0], [env.ip(1, 2)]);
    assert!(
        !before.files.keys().any(|f| f.contains(".spare")),
        "{:?}",
        before.files.keys()
    );

    let filler = disk.fill();
    let state_dir = env.state_dir().display().to_string();
    let new = env.name("new");
    let third = env.subnet(3);
    let attempts: Vec<(&str, Vec<&str>)> = vec![
        (
            "networks",
            vec!["network", "create", "--subnet", &third, "third"],
        ),
        (
            "containers",
            vec!["container", "create", "--name", &new, "busybox"],
        ),
        (
            "containers",
            vec!["run", "--name", &new, "--network", "front", "busybox"],
        ),
        ("containers", vec!["network", "connect", "back", &web]),
        (
            "containers",
            vec!["network", "connect", "--alias", "x", "back", &idle],
        ),
        ("containers", vec!["network", "disconnect", "front", &web]),
        ("containers", vec!["network", "disconnect", "back", &db]),
        ("containers", vec!["container", "start", &idle]),
        ("containers", vec!["container", "stop", &web]),
        ("containers", vec!["container", "restart", &db]),
        ("containers", vec!["container", "pause", &web]),
        ("containers", vec!["container", "unpause", &paused]),
    ];
    let mut unchanged = 0;
    for (dir, args) in &attempts {
        let msg = env.fails(args);
        let file = format!("writing {state_dir}/{dir}/");
        assert!(
            msg.contains(&file) && msg.contains("No space left on device"),
            "{args:?}: {msg}"
        );
        assert_eq!(seen(), before, "{args:?} changed something on a full disk");
        let ns = std::path::Path::new("/run/netns").join(&new);
        assert!(!ns.exists(), "{args:?} left a namespace behind");
        unchanged += 1;
    }
    report(serde_json::json!({
        "test": "disk_full",
        "operations_tried": attempts.len(),
        "failed_and_changed_nothing": unchanged,
        "state_files": before.files.len(),
    }));

    // A removal needs no space: it succeeds on the full disk, wholly.
    env.ok(&["container", "rm", "-f", &spare]);
    assert_ne!(env.cli(&["container", "inspect", &spare]).code, 0);
    assert!(!std::path::Path::new("/run/netns").join(&spare).exists());

    // Space again: everything works, and the agent's memory was never off.
    std::fs::remove_file(&filler).unwrap();
    env.ok(&["network", "connect", "back", &web]);
    assert_eq!(env.getent(&db, &web), [env.ip(1, 2)]);
    assert_eq!(env.links_in(&web).len(), 3, "lo, eth0, eth1");
    env.ok(&["network", "disconnect", "front", &web]);
    assert_eq!(env.getent(&db, "www"), Vec::<String>::new());
    env.ok(&["container", "start", &idle]);
    // web's address on front, free since its veth went with the disconnect.
    assert_eq!(env.ip_of(&idle, "front"), env.ip(1, 2));
    env.ok(&["container", "pause", &web]);
    env.ok(&["container", "unpause", &web]);
    env.ok(&["container", "stop", &db]);
    env.ok(&["run", "--name", &new, "--network", "front", "busybox"]);
    // db's address is free again only now that its veth is gone: the next container gets it.
    assert_eq!(env.ip_of(&new, "front"), env.ip(1, 3));
    env.ok(&["network", "create", "--subnet", &env.subnet(3), "third"]);
    env.ok(&["container", "unpause", &paused]);

    // web's file now has a spare: on a full disk again its changes are written into it, made
    // durable by the journal (allocated whole at its creation), and survive a crash.
    let filler = disk.fill();
    env.ok(&["network", "connect", "front", &web]);
    assert_eq!(env.getent(&new, &web), [env.ip(1, 4)]);
    env.fails(&[
        "container",
        "create",
        "--name",
        &env.name("more"),
        "busybox",
    ]);
    env.kill_daemon();
    std::fs::remove_file(&filler).unwrap();
    env.start_daemon();
    assert_eq!(env.ip_of(&web, "front"), env.ip(1, 4));
    assert_eq!(env.getent(&new, &web), [env.ip(1, 4)]);

    env.ok(&["container", "rm", "-f", &web, &db, &idle, &new, &paused]);
    env.ok(&["network", "rm", "front", "back", "third"]);
    env.kill_daemon();
    drop(disk);
}
