//! An attempt's log, a page at a time by byte offset: a 100 MB log opens as
//! fast as a small one, since only the page asked for is read. Pages start
//! and end on line boundaries where a line fits, and every page is scrubbed
//! of the secrets the process knows.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

/// The bytes of log one page shows.
pub const PAGE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct LogPage {
    /// Where this page starts and ends in the file.
    pub offset: u64,
    pub end: u64,
    /// The file's size when read.
    pub size: u64,
    pub text: String,
    /// Read from the copy the store keeps (the file is not on this machine).
    pub from_store: bool,
    pub prev: Option<u64>,
    pub next: Option<u64>,
    pub last: u64,
}

/// The page of `path` at `offset` (`None`: the last page).
pub fn page(path: &Path, offset: Option<u64>, len: u64) -> std::io::Result<LogPage> {
    let len = len.clamp(1024, 1024 * 1024);
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let last = size.saturating_sub(len);
    let start = offset.unwrap_or(last).min(size);
    // Whether `start` is a line's beginning: the byte before it ends one.
    let at_line_start = start == 0 || {
        f.seek(SeekFrom::Start(start - 1))?;
        let mut b = [0u8; 1];
        f.read_exact(&mut b)?;
        b[0] == b'\n'
    };
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.by_ref().take(len).read_to_end(&mut buf)?;
    // Start after a partial first line (unless at the file's start) and
    // stop after the last whole line (unless at its end), where one exists.
    let mut from = 0;
    if !at_line_start {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            from = i + 1;
        }
    }
    let mut to = buf.len();
    if start + (buf.len() as u64) < size {
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            if i + 1 > from {
                to = i + 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf[from..to]);
    let (offset, end) = (start + from as u64, start + to as u64);
    Ok(LogPage {
        offset,
        end,
        size,
        text: weir_config::scrub(&text).into_owned(),
        from_store: false,
        prev: (offset > 0).then(|| offset.saturating_sub(len)),
        next: (end < size).then_some(end),
        last,
    })
}

/// The store's copy of the log's end, as one page.
pub fn stored(tail: &str) -> LogPage {
    let size = tail.len() as u64;
    LogPage {
        offset: 0,
        end: size,
        size,
        text: weir_config::scrub(tail).into_owned(),
        from_store: true,
        prev: None,
        next: None,
        last: 0,
    }
}

/// What was appended to `path` since `offset`, at most `PAGE_BYTES`, cut
/// after the last whole line (all of it once `ended`: the last line may have
/// no newline); with the new offset.
pub fn appended(path: &Path, offset: u64, ended: bool) -> std::io::Result<Option<(String, u64)>> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    if size <= offset {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(PAGE_BYTES).read_to_end(&mut buf)?;
    let cut = match buf.iter().rposition(|&b| b == b'\n') {
        Some(_) if ended && (buf.len() as u64) < PAGE_BYTES => buf.len(),
        Some(i) => i + 1,
        None if ended || buf.len() as u64 >= PAGE_BYTES => buf.len(),
        None => return Ok(None),
    };
    let text = weir_config::scrub(&String::from_utf8_lossy(&buf[..cut])).into_owned();
    Ok(Some((text, offset + cut as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cut_on_lines_and_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let lines: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &lines).unwrap();
        let mut offset = Some(0);
        let mut seen = String::new();
        while let Some(o) = offset {
            let pg = page(&p, Some(o), 4096).unwrap();
            assert!(pg.text.ends_with('\n'));
            seen.push_str(&pg.text);
            offset = pg.next;
        }
        assert!(
            seen == lines,
            "pages lost or repeated bytes: {} of {}",
            seen.len(),
            lines.len()
        );
        let last = page(&p, None, 4096).unwrap();
        assert!(last.text.ends_with("line 4999\n"));
        assert!(last.text.starts_with("line "), "{:?}", &last.text[..20]);
        assert_eq!(last.end, lines.len() as u64);
    }
}
