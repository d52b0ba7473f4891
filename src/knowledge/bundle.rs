//! Content held in memory: the knowledge base and intents compiled into the binary, or
//! a set of files uploaded by a content editor.
//!
//! A bundle is loaded through the very same directory loaders as files on disk (it is
//! written to a private temporary directory first), so an upload is validated exactly
//! like `kefu kb check` validates a directory, and its errors name the uploaded file and
//! line (`knowledge-base/cards.toml:12`), not a temporary path.

use std::path::Path;

use include_dir::{include_dir, Dir};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ContentErrors, Error, Result};
use crate::intents::IntentSet;
use crate::knowledge::KnowledgeBase;

static BUNDLED_KB: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/knowledge-base");
static BUNDLED_INTENTS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/intents");

/// Where knowledge-base files go inside a bundle.
pub const KB_DIR: &str = "knowledge-base";
/// Where intent rule files go inside a bundle.
pub const INTENTS_DIR: &str = "intents";
/// Largest bundle accepted (all files together).
pub const MAX_BUNDLE_BYTES: usize = 32 << 20;

/// One content file: its path inside the bundle (`knowledge-base/cards.toml`) and bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentBundle {
    pub files: Vec<ContentFile>,
}

impl ContentBundle {
    /// The knowledge base and intents this binary was built with.
    pub fn bundled() -> Self {
        let mut files = Vec::new();
        for (prefix, dir) in [(KB_DIR, &BUNDLED_KB), (INTENTS_DIR, &BUNDLED_INTENTS)] {
            for f in dir.files() {
                files.push(ContentFile {
                    name: format!("{prefix}/{}", f.path().display()),
                    bytes: f.contents().to_vec(),
                });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        ContentBundle { files }
    }

    /// Reads a knowledge-base directory and an intents directory (which may be absent).
    pub fn from_dirs(kb: &Path, intents: &Path) -> Result<Self> {
        let mut files = Vec::new();
        for (prefix, dir, required) in [(KB_DIR, kb, true), (INTENTS_DIR, intents, false)] {
            if !required && !dir.is_dir() {
                continue;
            }
            let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            for e in entries.filter_map(|e| e.ok()) {
                let path = e.path();
                if !path.is_file() {
                    continue;
                }
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                files.push(ContentFile {
                    name: format!("{prefix}/{name}"),
                    bytes,
                });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ContentBundle { files })
    }

    /// A short, stable name for this content: the first 12 hex digits of a SHA-256
    /// over the file names and bytes. The same files give the same version on every
    /// replica and after every restart.
    pub fn version(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            h.update((f.name.len() as u64).to_be_bytes());
            h.update(f.name.as_bytes());
            h.update((f.bytes.len() as u64).to_be_bytes());
            h.update(&f.bytes);
        }
        hex::encode(&h.finalize()[..6])
    }

    /// Checks names and sizes, then loads and validates everything; errors name the
    /// file inside the bundle and the line.
    pub fn load(&self) -> Result<(KnowledgeBase, IntentSet)> {
        let total: usize = self.files.iter().map(|f| f.bytes.len()).sum();
        if total > MAX_BUNDLE_BYTES {
            return Err(Error::InvalidInput(format!(
                "the content is {total} bytes; at most {MAX_BUNDLE_BYTES} bytes are accepted"
            )));
        }
        let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let root = dir.path();
        std::fs::create_dir(root.join(KB_DIR)).map_err(|e| Error::io(root, e))?;
        std::fs::create_dir(root.join(INTENTS_DIR)).map_err(|e| Error::io(root, e))?;
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            let Some((folder, file)) = f.name.split_once('/') else {
                return Err(bad_name(&f.name));
            };
            let plain = !file.is_empty()
                && !file.starts_with('.')
                && !file.contains(['/', '\\', '\0'])
                && file.len() <= 128;
            if !(folder == KB_DIR || folder == INTENTS_DIR) || !plain {
                return Err(bad_name(&f.name));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(Error::InvalidInput(format!("{} is given twice", f.name)));
            }
            let path = root.join(folder).join(file);
            std::fs::write(&path, &f.bytes).map_err(|e| Error::io(&path, e))?;
        }
        let relative = |e: Error| match e {
            Error::Content(ContentErrors(mut issues)) => {
                for i in &mut issues {
                    if let Ok(rel) = i.location.file.strip_prefix(root) {
                        i.location.file = rel.to_owned();
                    }
                }
                Error::Content(ContentErrors(issues))
            }
            other => other,
        };
        let mut kb = KnowledgeBase::load_dir(&root.join(KB_DIR)).map_err(relative)?;
        kb.relocate(root);
        let intents = IntentSet::load_dir(&root.join(INTENTS_DIR)).map_err(relative)?;
        Ok((kb, intents))
    }
}

fn bad_name(name: &str) -> Error {
    Error::InvalidInput(format!(
        "file name \"{name}\" is not accepted: use knowledge-base/NAME or intents/NAME (no sub-folders, no leading dot)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_content_loads_and_has_a_stable_version() {
        let b = ContentBundle::bundled();
        assert!(b
            .files
            .iter()
            .any(|f| f.name == "knowledge-base/cards.toml"));
        assert!(b.files.iter().any(|f| f.name == "intents/service.toml"));
        let (kb, _) = b.load().unwrap();
        assert!(kb.len() > 100);
        assert_eq!(b.version(), ContentBundle::bundled().version());
        assert_eq!(b.version().len(), 12);
    }

    #[test]
    fn errors_name_the_file_in_the_bundle() {
        let mut b = ContentBundle::bundled();
        let f = b
            .files
            .iter_mut()
            .find(|f| f.name == "knowledge-base/cards.toml")
            .unwrap();
        f.bytes.extend_from_slice(b"\n[[entry]]\nid = \n");
        let err = b.load().unwrap_err().to_string();
        assert!(err.contains("knowledge-base/cards.toml:"), "{err}");
        assert!(!err.contains("/tmp"), "{err}");
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            "../etc/passwd",
            "knowledge-base/../../x.toml",
            "knowledge-base/.hidden",
            "other/x.toml",
            "knowledge-base/",
            "cards.toml",
        ] {
            let b = ContentBundle {
                files: vec![ContentFile {
                    name: name.into(),
                    bytes: b"x".to_vec(),
                }],
            };
            assert!(
                matches!(b.load(), Err(Error::InvalidInput(_))),
                "{name} accepted"
            );
        }
    }
}
