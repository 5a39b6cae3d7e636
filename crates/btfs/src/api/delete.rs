//! Deleting a torrent's files from a user's folder, for `jobs rm --delete-data`.
//!
//! Policy: only the given paths go (each below the folder, made of plain names), then
//! the folders they leave empty; the folder itself stays, and so does anything else in
//! it. Nothing is ever resolved through a symbolic link, and nothing is checked by path
//! and then used by path: the walk starts from a descriptor of the folder, opens each
//! subfolder relative to its parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`, and
//! unlinks relative to the descriptor of the folder that holds the name. A folder swapped
//! for a link at any moment makes that path end there (nothing is deleted through it); a
//! name that turns out to be a folder is not a file and stays. An error on one path is
//! recorded and the others go on.
//!
//! No state, no locks.

use rustix::fs::{openat, unlinkat, AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;
use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Most errors one removal reports (the rest are counted).
pub const MAX_REPORTED: usize = 20;

/// A name that stays inside its folder: not empty, `.` or `..`, no `/` or NUL.
pub fn is_plain_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0')
}

/// Deletes each of `files` (paths below `root` with `/` between names), then the folders
/// of those paths that are left empty, deepest first. Returns what could not be done,
/// one line each; a path that is not there, or passes through a link or a non-folder,
/// is not an error.
pub fn remove_files<'a>(root: &Path, files: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut errors = Vec::new();
    let top = match openat(CWD, root, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return errors,
        Err(e) => {
            errors.push(format!("opening {}: {e}", root.display()));
            return errors;
        }
    };
    let mut folders: BTreeSet<Vec<&str>> = BTreeSet::new();
    for rel in files {
        let parts: Vec<&str> = rel.split('/').collect();
        if !parts.iter().all(|p| is_plain_name(p)) {
            continue;
        }
        let (name, dirs) = parts.split_last().expect("split gives one part at least");
        let dir = match open_beneath(&top, dirs) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                errors.push(format!(
                    "opening {}: {e}",
                    root.join(dirs.join("/")).display()
                ));
                continue;
            }
        };
        for depth in 1..=dirs.len() {
            folders.insert(dirs[..depth].to_vec());
        }
        match unlinkat(&dir, *name, AtFlags::empty()) {
            // Gone already, or a folder where the file was: not the torrent's file.
            Ok(()) | Err(Errno::NOENT) | Err(Errno::ISDIR) => {}
            Err(e) => errors.push(format!("removing {}: {e}", root.join(rel).display())),
        }
    }
    let mut folders: Vec<Vec<&str>> = folders.into_iter().collect();
    folders.sort_by_key(|f| std::cmp::Reverse(f.len()));
    for f in folders {
        let (name, parents) = f.split_last().expect("folders have a name");
        let Ok(Some(parent)) = open_beneath(&top, parents) else {
            continue;
        };
        match unlinkat(&parent, *name, AtFlags::REMOVEDIR) {
            // Still holds something (it stays), gone, or no longer a folder (a link).
            Ok(()) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST) | Err(Errno::NOENT)
            | Err(Errno::NOTDIR) => {}
            Err(e) => errors.push(format!(
                "removing the folder {}: {e}",
                root.join(f.join("/")).display()
            )),
        }
    }
    errors
}

/// `O_RDONLY | O_DIRECTORY | O_CLOEXEC`.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// The folder `dirs` below `top`, each step opened relative to the last without
/// following a link; `None` when one is missing, a link or not a folder.
fn open_beneath(top: &OwnedFd, dirs: &[&str]) -> Result<Option<OwnedFd>, Errno> {
    let mut fd = openat(top, ".", dir_flags(), Mode::empty())?;
    for d in dirs {
        fd = match openat(&fd, *d, dir_flags() | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(e),
        };
    }
    Ok(Some(fd))
}

/// `errors` as one message: the first [`MAX_REPORTED`], then how many more.
pub fn summary(errors: &[String]) -> String {
    let mut s = errors
        .iter()
        .take(MAX_REPORTED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > MAX_REPORTED {
        s.push_str(&format!("; and {} more", errors.len() - MAX_REPORTED));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_given_files_go_and_links_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let (root, outside) = (t.path().join("out"), t.path().join("elsewhere"));
        for p in ["t/a.bin", "t/deep/er/c.bin", "t/skipped.bin", "t/mine.txt"] {
            std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
            std::fs::write(root.join(p), b"x").unwrap();
        }
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("b.bin"), b"keep").unwrap();
        std::fs::write(t.path().join("x"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("t/sub")).unwrap();
        std::fs::create_dir_all(root.join("t/folder.bin")).unwrap();
        let errors = remove_files(
            &root,
            [
                "t/a.bin",
                "t/deep/er/c.bin",
                "t/sub/b.bin",
                "t/folder.bin",
                "../x",
                "t//a.bin",
                "",
            ],
        );
        assert_eq!(errors, Vec::<String>::new());
        assert!(!root.join("t/a.bin").exists());
        assert!(!root.join("t/deep").exists(), "emptied folders go");
        assert!(root.join("t/skipped.bin").exists(), "not given: kept");
        assert!(root.join("t/mine.txt").exists());
        assert!(root.join("t/folder.bin").is_dir(), "a folder is not a file");
        assert!(outside.join("b.bin").exists(), "a link was followed");
        assert!(t.path().join("x").exists());
        // Nothing of the torrent left: its folder goes too, the given folder stays.
        std::fs::remove_file(root.join("t/sub")).unwrap();
        std::fs::remove_dir(root.join("t/folder.bin")).unwrap();
        let errors = remove_files(&root, ["t/mine.txt", "t/skipped.bin", "t/x"]);
        assert_eq!(errors, Vec::<String>::new());
        assert!(!root.join("t").exists());
        assert!(root.exists());
        // A folder that is not there: nothing to do.
        assert!(remove_files(&t.path().join("none"), ["a"]).is_empty());
    }

    /// A path that cannot be removed (here a name longer than the file system takes) is
    /// reported, and the paths after it are still removed.
    #[test]
    fn errors_are_collected_and_the_rest_goes_on() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("out");
        std::fs::create_dir_all(root.join("t")).unwrap();
        std::fs::write(root.join("t/a.bin"), b"x").unwrap();
        std::fs::write(root.join("t/b.bin"), b"x").unwrap();
        let long = format!("t/{}", "n".repeat(300));
        let errors = remove_files(&root, [long.as_str(), "t/a.bin", long.as_str(), "t/b.bin"]);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("removing") && errors[0].contains("nnnn"),
            "{errors:?}"
        );
        assert!(!root.join("t/a.bin").exists());
        assert!(!root.join("t").exists());
        let many: Vec<String> = (0..30).map(|i| format!("e{i}")).collect();
        assert!(summary(&many).ends_with("e19; and 10 more"));
    }
}
