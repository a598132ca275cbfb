//! The node incarnation, persisted in `<state_dir>/incarnation`.
//!
//! Every start reads the file, adds one and writes it back atomically (a
//! temporary file in the same directory, fsync, rename over the old one,
//! fsync of the directory) **before** the daemon joins the cluster, so a
//! restarted daemon is always told apart from a stale one. A file that does
//! not hold exactly one decimal number is an error: it is never silently
//! reused or reset (an incarnation going backwards would let a stale node
//! pass as restarted).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "incarnation";

#[derive(Debug)]
pub enum IncarnationError {
    Corrupt { path: PathBuf, why: String },
    Io { path: PathBuf, op: &'static str, err: std::io::Error },
}

impl std::fmt::Display for IncarnationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IncarnationError::Corrupt { path, why } => write!(
                f,
                "incarnation file {} is corrupt ({why}); refusing to guess: make sure this node's previous daemon is \
                 gone, then fix or remove the file",
                path.display()
            ),
            IncarnationError::Io { path, op, err } => write!(f, "incarnation file {}: {op}: {err}", path.display()),
        }
    }
}

impl std::error::Error for IncarnationError {}

/// Parse the file's content: one decimal u64 (≥ 1), optionally followed by a
/// newline.
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.strip_suffix('\n').unwrap_or(text);
    if t.is_empty() {
        return Err("empty".into());
    }
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a decimal number: {:?}", truncate(t)));
    }
    let v: u64 = t.parse().map_err(|_| format!("number out of range: {:?}", truncate(t)))?;
    if v == 0 {
        return Err("zero is never a valid incarnation".into());
    }
    Ok(v)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Read the current incarnation (`None`: no file yet).
pub fn read(dir: &Path) -> Result<Option<u64>, IncarnationError> {
    let path = dir.join(FILE_NAME);
    match fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| IncarnationError::Corrupt { path: path.clone(), why: "not UTF-8".into() })?;
            parse(&text).map(Some).map_err(|why| IncarnationError::Corrupt { path, why })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(IncarnationError::Io { path, op: "read", err }),
    }
}

/// Atomically replace the file with `value`.
pub fn write(dir: &Path, value: u64) -> Result<(), IncarnationError> {
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!(".{FILE_NAME}.tmp.{}", std::process::id()));
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |err| IncarnationError::Io { path: p, op, err }
    };
    {
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io("create", &tmp))?;
        f.write_all(format!("{value}\n").as_bytes()).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
    }
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(IncarnationError::Io { path, op: "rename", err: e });
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))?;
    Ok(())
}

/// Read, increment, persist; returns the new incarnation.
pub fn bump(dir: &Path) -> Result<u64, IncarnationError> {
    let old = read(dir)?.unwrap_or(0);
    let path = dir.join(FILE_NAME);
    let new = old.checked_add(1).ok_or(IncarnationError::Corrupt { path, why: "incarnation would overflow".into() })?;
    write(dir, new)?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one_and_increments() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), None);
        assert_eq!(bump(d.path()).unwrap(), 1);
        assert_eq!(bump(d.path()).unwrap(), 2);
        assert_eq!(fs::read_to_string(d.path().join(FILE_NAME)).unwrap(), "2\n");
        // no temporary file left behind
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn corrupt_files_are_errors_and_left_alone() {
        for bad in ["", "\n", "abc\n", "12 13\n", "-4\n", "0\n", "99999999999999999999999\n", "7\n\n"] {
            let d = tempfile::tempdir().unwrap();
            fs::write(d.path().join(FILE_NAME), bad).unwrap();
            let e = bump(d.path()).unwrap_err();
            assert!(matches!(e, IncarnationError::Corrupt { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("is corrupt"), "{e}");
            assert_eq!(fs::read_to_string(d.path().join(FILE_NAME)).unwrap(), bad, "file was modified");
        }
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(FILE_NAME), [0xff, 0xfe]).unwrap();
        assert!(matches!(bump(d.path()), Err(IncarnationError::Corrupt { .. })));
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(FILE_NAME), format!("{}\n", u64::MAX)).unwrap();
        assert!(bump(d.path()).unwrap_err().to_string().contains("overflow"));
    }

    #[test]
    fn accepts_without_trailing_newline() {
        assert_eq!(parse("41"), Ok(41));
        assert_eq!(parse("41\n"), Ok(41));
    }
}
