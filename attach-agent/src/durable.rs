//! Files replaced atomically: a crash leaves the old file or the new one, whole, never a mix.
//!
//! The state must survive a power cut once acknowledged, so its files are flushed (the file,
//! then its directory, once for all the files of a change); files the agent regenerates at start
//! (a namespace's resolv.conf and hosts) skip the flushes.

use std::io::Write;
use std::path::Path;

/// How far a write waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Rename only: the file may be lost on a power cut (regenerated at start).
    None,
    /// The file's data is on disk before the rename; the caller flushes the directory
    /// (see [`sync_dir`]), once for every file it wrote.
    File,
    /// The file and its name are on disk when this returns.
    FileAndDir,
}

/// Replace `path` with `bytes`: written to a temp file beside it (a name starting with `.`,
/// which readers of a directory skip), flushed as `flush` says, then renamed over `path`.
/// On failure (a full disk, say) the temp file is removed and `path` is as it was; the error
/// names `path`.
pub fn replace(path: &Path, bytes: &[u8], flush: Flush) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if flush != Flush::None {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::new(
            e.kind(),
            format!("writing {}: {}", path.display(), bare(&e)),
        ));
    }
    if flush == Flush::FileAndDir {
        sync_dir(dir)?;
    }
    Ok(())
}

/// An error's message without std's " (os error N)" tail: "No space left on device".
fn bare(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Flush a directory, so that the names written into it are on disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("flushing {}: {}", dir.display(), bare(&e)),
            )
        })
}
