//! Reading files that content teams edit (knowledge base, intents).
//!
//! Editors save files from Excel, WPS and Windows Notepad: expect a BOM, CRLF line ends,
//! GBK instead of UTF-8, and the occasional export of a whole database. Each of those
//! gets a message that names the file and line and says what to do.

use std::path::Path;

use crate::error::{ContentIssue, Location};

/// Larger files are refused before they are read: a knowledge base of 100 000 entries is
/// about 30 MB, so anything past this is almost surely the wrong file.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a UTF-8 text file, strips a BOM, and reports size and encoding problems.
pub fn read_text(path: &Path) -> Result<String, ContentIssue> {
    let at_start = |message: String| ContentIssue {
        location: Location::new(path, 1, None),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| at_start(format!("cannot read file: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(at_start(format!(
            "file is {:.1} MiB, more than the {} MiB limit; split it into several files",
            meta.len() as f64 / (1024.0 * 1024.0),
            MAX_FILE_BYTES / (1024 * 1024)
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| at_start(format!("cannot read file: {e}")))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count();
            let col = 1 + String::from_utf8_lossy(&bytes[..valid])
                .rsplit('\n')
                .next()
                .map_or(0, |l| l.chars().count());
            return Err(ContentIssue {
                location: Location::new(path, line, Some(col)),
                message: "file is not valid UTF-8 (saved as GBK/ANSI?); save it as UTF-8"
                    .to_owned(),
            });
        }
    };
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

/// Byte offset → 1-based line and column, for parsers that report spans.
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    pub fn line_of(&self, byte: usize) -> usize {
        match self.starts.binary_search(&byte) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

/// A TOML syntax or shape error, located at its line.
pub fn toml_issue(path: &Path, lines: &LineIndex, err: &toml::de::Error) -> ContentIssue {
    let line = err.span().map_or(1, |s| lines.line_of(s.start));
    // toml's message repeats the source excerpt over several lines; the first line says it all.
    let message = err
        .message()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .to_owned();
    ContentIssue {
        location: Location::new(path, line, None),
        message: format!("invalid TOML: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_maps_offsets() {
        let idx = LineIndex::new("a\nbc\n\nd");
        assert_eq!(idx.line_of(0), 1);
        assert_eq!(idx.line_of(2), 2);
        assert_eq!(idx.line_of(3), 2);
        assert_eq!(idx.line_of(5), 3);
        assert_eq!(idx.line_of(6), 4);
    }

    #[test]
    fn bom_is_stripped_and_gbk_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "\u{feff}x = 1\r\n").unwrap();
        assert_eq!(read_text(&p).unwrap(), "x = 1\r\n");
        // "银行" in GBK on the second line.
        std::fs::write(&p, b"ok\n\xd2\xf8\xd0\xd0").unwrap();
        let issue = read_text(&p).unwrap_err();
        assert_eq!(issue.location.line, 2);
        assert!(issue.message.contains("UTF-8"));
    }
}
