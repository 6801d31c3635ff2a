//! Which directories the reload watcher watches, and keeping those watches true.
//!
//! A snapshot is read from files: the config file, every file under the schema directory
//! (`$ref`s cannot leave it), mock bodies and TLS files. A change to any of them must reach the
//! watcher, wherever it lies and however it is reached. Coverage is decided on the paths the
//! kernel actually resolves, never on the paths as written: `config/../schemas` is not inside
//! `config/`, and `Path::starts_with` on unresolved paths would say it is.
//!
//! For each source this module watches:
//! - the directory that holds the file as resolved (its canonical parent), or the directory
//!   itself, recursively, for the schema directory;
//! - every directory that holds a symbolic link met while resolving the path, so that a link
//!   swapped for another (a Kubernetes ConfigMap's `..data`, a symlinked config file pointed
//!   elsewhere) is seen even though the old target never changes;
//! - when a path does not exist (a directory deleted, not yet created), its deepest existing
//!   ancestor, so that its (re)creation is seen.
//!
//! [`Watches::sync`] applies a new list: it adds and removes watches, and re-adds a watch
//! whose directory was replaced (same path, another inode), because the kernel's watch stays
//! with the old inode. Architecture invariant: this module does not reload; it reports
//! whether the watched directories moved, and the reloader decides.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use notify_debouncer_mini::notify::{RecursiveMode, Watcher};
use notify_debouncer_mini::Debouncer;

use crate::snapshot::Snapshot;
use crate::upstream::UpstreamTarget;

/// Symbolic links followed while resolving one path before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;

/// One watched directory, as `/status` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedDir {
    /// Canonical: every symbolic link resolved.
    pub path: PathBuf,
    pub recursive: bool,
    /// What the directory holds that the snapshot read, e.g. `config file gateway.yaml`.
    pub reasons: Vec<String>,
    /// The directory's identity when watched; `None` when it could not be watched.
    identity: Option<(u64, u64)>,
    /// Why watching it failed, if it did.
    pub error: Option<String>,
}

/// What a snapshot was read from: `(path as configured, recursive, what it is)`.
pub fn sources(snapshot: &Snapshot) -> Vec<(PathBuf, bool, String)> {
    let mut sources = vec![(snapshot.source.clone(), false, "config file".to_string())];
    if let Some(dir) = &snapshot.schema_dir {
        sources.push((dir.clone(), true, "schema directory".to_string()));
    }
    for route in &snapshot.routes {
        if let UpstreamTarget::Mock { file, .. } = &route.upstream.target {
            sources.push((file.clone(), false, "mock body".to_string()));
        }
    }
    for file in &snapshot.openapi_files {
        sources.push((file.clone(), false, "OpenAPI document".to_string()));
    }
    for file in &snapshot.tls_files {
        sources.push((file.clone(), false, "TLS file".to_string()));
    }
    for file in &snapshot.jwt_files {
        sources.push((file.clone(), false, "JWT key file".to_string()));
    }
    if let Some(store) = &snapshot.redis {
        for file in &store.settings().files {
            sources.push((
                file.clone(),
                false,
                "Redis password or TLS file".to_string(),
            ));
        }
    }
    sources
}

/// The directories to watch for `sources`, each once: a directory inside a recursively
/// watched one is covered by it. Identities are read now.
pub fn plan(sources: &[(PathBuf, bool, String)]) -> Vec<WatchedDir> {
    let mut dirs: BTreeMap<PathBuf, (bool, Vec<String>)> = BTreeMap::new();
    let mut add = |dir: PathBuf, recursive: bool, reason: String| {
        let entry = dirs.entry(dir).or_insert((false, Vec::new()));
        entry.0 |= recursive;
        if !entry.1.contains(&reason) {
            entry.1.push(reason);
        }
    };
    for (path, recursive, what) in sources {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let resolved = resolve(path);
        for dir in resolved.link_dirs {
            add(dir, false, format!("symlink to {what} {name}"));
        }
        match (resolved.exists, *recursive) {
            (true, true) => add(resolved.path, true, what.clone()),
            (true, false) => {
                if let Some(parent) = resolved.path.parent() {
                    add(parent.to_path_buf(), false, format!("{what} {name}"));
                }
            }
            // Missing: the deepest existing ancestor sees it appear.
            (false, _) => add(resolved.path, false, format!("{what} {name} (missing)")),
        }
    }
    let recursive: Vec<PathBuf> = dirs
        .iter()
        .filter(|(_, (recursive, _))| *recursive)
        .map(|(dir, _)| dir.clone())
        .collect();
    dirs.into_iter()
        .filter(|(dir, (is_recursive, _))| {
            *is_recursive || !recursive.iter().any(|r| dir.starts_with(r))
        })
        .map(|(path, (recursive, reasons))| WatchedDir {
            identity: identity(&path),
            path,
            recursive,
            reasons,
            error: None,
        })
        .collect()
}

/// A path resolved the way the kernel resolves it.
struct Resolved {
    /// The canonical path when it exists, else its deepest existing ancestor (canonical).
    path: PathBuf,
    exists: bool,
    /// The (canonical) directories holding each symbolic link met on the way.
    link_dirs: Vec<PathBuf>,
}

/// Resolves `path` component by component, following symbolic links, and notes the directory
/// of every link met. Relative paths start at the current directory, as the loader's do.
fn resolve(path: &Path) -> Resolved {
    let start = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut pending: Vec<Part> = parts(&start);
    pending.reverse();
    let mut resolved = PathBuf::from("/");
    let mut link_dirs = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        let name = match part {
            Part::Root => {
                resolved = PathBuf::from("/");
                continue;
            }
            Part::Parent => {
                resolved.pop();
                continue;
            }
            Part::Name(name) => name,
        };
        let next = resolved.join(&name);
        let metadata = match std::fs::symlink_metadata(&next) {
            Ok(metadata) => metadata,
            Err(_) => {
                return Resolved {
                    path: resolved,
                    exists: false,
                    link_dirs,
                }
            }
        };
        if !metadata.file_type().is_symlink() {
            resolved = next;
            continue;
        }
        links += 1;
        let target = match std::fs::read_link(&next) {
            Ok(target) if links <= MAX_LINKS => target,
            _ => {
                return Resolved {
                    path: resolved,
                    exists: false,
                    link_dirs,
                }
            }
        };
        if !link_dirs.contains(&resolved) {
            link_dirs.push(resolved.clone());
        }
        // The link's target replaces it; a relative target continues from its directory.
        let mut target_parts = parts(&target);
        target_parts.reverse();
        pending.extend(target_parts);
    }
    Resolved {
        path: resolved,
        exists: true,
        link_dirs,
    }
}

enum Part {
    Root,
    Parent,
    Name(OsString),
}

fn parts(path: &Path) -> Vec<Part> {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir => Some(Part::Root),
            Component::ParentDir => Some(Part::Parent),
            Component::Normal(name) => Some(Part::Name(name.to_os_string())),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(unix)]
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|_| (0, 0))
}

/// The watches in place on a (debounced) watcher.
pub struct Watches<W: Watcher> {
    debouncer: Debouncer<W>,
    current: Vec<WatchedDir>,
}

impl<W: Watcher> Watches<W> {
    pub fn new(debouncer: Debouncer<W>) -> Watches<W> {
        Watches {
            debouncer,
            current: Vec::new(),
        }
    }

    /// Makes the watches match `wanted`. Returns true when the list differs from the last
    /// sync's (a directory replaced, appeared, vanished or resolved elsewhere): files may then
    /// have changed without an event reaching us. With `renew`, every watch is removed and
    /// added again, even where nothing seems to have moved: a directory deleted and recreated
    /// can come back with the same inode number, and its old watch is gone. A directory that
    /// cannot be watched is listed with its error and retried at the next sync.
    pub fn sync(&mut self, mut wanted: Vec<WatchedDir>, renew: bool) -> bool {
        let key = |w: &WatchedDir| (w.path.clone(), w.recursive, w.identity);
        let moved = self.current.iter().map(key).ne(wanted.iter().map(key));
        let same = |a: &WatchedDir, b: &WatchedDir| !renew && key(a) == key(b) && a.error.is_none();
        for old in &self.current {
            let kept = wanted.iter().any(|w| same(old, w));
            if !kept && old.error.is_none() {
                // The directory may be gone already, and its watch with it.
                let _ = self.debouncer.watcher().unwatch(&old.path);
            }
        }
        for new in &mut wanted {
            let old = self.current.iter().find(|o| o.path == new.path);
            if let Some(old) = old.filter(|o| same(o, new)) {
                new.error.clone_from(&old.error);
                continue;
            }
            let mode = if new.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(error) = self.debouncer.watcher().watch(&new.path, mode) {
                let error = error.to_string();
                if old.and_then(|o| o.error.as_ref()) != Some(&error) {
                    tracing::warn!(path = %new.path.display(), %error, "cannot watch; reload with SIGHUP meanwhile");
                }
                new.error = Some(error);
            }
        }
        self.current = wanted;
        moved
    }

    /// The watches as they stand, for `/status`.
    pub fn listed(&self) -> Vec<WatchedDir> {
        self.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap()
    }

    #[test]
    fn a_sibling_reached_through_dotdot_is_not_inside_the_config_directory() {
        let root = tempfile::tempdir().unwrap();
        let root = canonical(root.path());
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::create_dir_all(root.join("schemas/flextell")).unwrap();
        std::fs::write(root.join("config/gateway.yaml"), "").unwrap();
        let plan = plan(&[
            (
                root.join("config/gateway.yaml"),
                false,
                "config file".into(),
            ),
            (
                root.join("config/../schemas"),
                true,
                "schema directory".into(),
            ),
        ]);
        let paths: Vec<_> = plan.iter().map(|w| (w.path.clone(), w.recursive)).collect();
        assert_eq!(
            paths,
            vec![(root.join("config"), false), (root.join("schemas"), true)]
        );
    }

    #[test]
    fn a_directory_inside_a_recursive_watch_is_covered() {
        let root = tempfile::tempdir().unwrap();
        let root = canonical(root.path());
        std::fs::create_dir_all(root.join("schemas/certs")).unwrap();
        std::fs::write(root.join("schemas/certs/key.pem"), "").unwrap();
        let plan = plan(&[
            (root.join("schemas"), true, "schema directory".into()),
            (root.join("schemas/certs/key.pem"), false, "TLS file".into()),
        ]);
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert_eq!(plan[0].path, root.join("schemas"));
    }

    #[test]
    fn symlinks_add_the_directories_that_hold_them() {
        // A Kubernetes ConfigMap mount: mount/gateway.yaml -> ..data/gateway.yaml,
        // mount/..data -> ..2026_12_04_1.
        let root = tempfile::tempdir().unwrap();
        let mount = canonical(root.path()).join("mount");
        std::fs::create_dir_all(mount.join("..2026_12_04_1")).unwrap();
        std::fs::write(mount.join("..2026_12_04_1/gateway.yaml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_12_04_1", mount.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/gateway.yaml", mount.join("gateway.yaml")).unwrap();
        let plan = plan(&[(mount.join("gateway.yaml"), false, "config file".into())]);
        let paths: Vec<_> = plan.iter().map(|w| w.path.clone()).collect();
        assert_eq!(paths, vec![mount.clone(), mount.join("..2026_12_04_1")]);
    }

    #[test]
    fn a_missing_directory_is_watched_through_its_deepest_existing_ancestor() {
        let root = tempfile::tempdir().unwrap();
        let root = canonical(root.path());
        let plan = plan(&[(root.join("gone/schemas"), true, "schema directory".into())]);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].path, root);
        assert!(!plan[0].recursive);
    }
}
