//! Dropping the supervisor's resident copies of code it no longer runs.
//!
//! A supervisor runs much of libcontainer, serde and libc while it creates
//! and starts the container, then idles in one `poll(2)` loop for the
//! container's lifetime. The file-backed pages touched on the way stay
//! mapped: they are shared page cache, but they count in the supervisor's
//! RSS (and in the OOM killer's view of it) for as long as it lives. Once
//! the work is done we zap our page-table entries for read-only file
//! mappings that hold no private pages; whatever the idle loop touches again
//! is refaulted from the page cache (a minor fault, no I/O).
//!
//! Only mappings without a `w` permission and with `Anonymous: 0 kB` are
//! touched: those hold nothing but clean file pages, so dropping them loses
//! nothing. RELRO and data mappings carry copy-on-write pages (relocations,
//! globals) and are never advised.

use std::io;

/// Why shedding failed (the supervisor logs it and carries on).
#[derive(Debug, thiserror::Error)]
pub enum ShedError {
    #[error("reading /proc/self/smaps: {0}")]
    Smaps(io::Error),
}

/// One mapping that may be dropped: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: usize,
    pub end: usize,
    /// Resident bytes before shedding.
    pub rss: usize,
}

/// The droppable regions of an smaps text: read-only file mappings with
/// resident pages and no anonymous (copy-on-write) pages.
pub fn droppable(smaps: &str) -> Vec<Region> {
    let mut out = Vec::new();
    // The mapping being read: (region, eligible so far, anonymous seen).
    let mut cur: Option<(Region, bool, Option<usize>)> = None;
    let mut flush = |cur: &mut Option<(Region, bool, Option<usize>)>| {
        if let Some((r, ok, anon)) = cur.take() {
            if ok && anon == Some(0) && r.rss > 0 {
                out.push(r);
            }
        }
    };
    for line in smaps.lines() {
        if let Some(header) = parse_header(line) {
            flush(&mut cur);
            cur = Some(header);
            continue;
        }
        let Some((_, ok, anon)) = cur.as_mut() else {
            continue;
        };
        let mut w = line.split_whitespace();
        match (w.next(), w.next().and_then(|v| v.parse::<usize>().ok())) {
            (Some("Rss:"), Some(kb)) => cur.as_mut().expect("set above").0.rss = kb * 1024,
            (Some("Anonymous:"), Some(kb)) => *anon = Some(kb),
            // Locked pages can't be dropped; leave such a mapping alone.
            (Some("Locked:"), Some(kb)) if kb > 0 => *ok = false,
            _ => {}
        }
    }
    flush(&mut cur);
    out
}

/// `start-end perms offset dev inode path`: the region and whether its
/// permissions and backing allow dropping it.
fn parse_header(line: &str) -> Option<(Region, bool, Option<usize>)> {
    let mut w = line.split_whitespace();
    let range = w.next()?;
    let (s, e) = range.split_once('-')?;
    let start = usize::from_str_radix(s, 16).ok()?;
    let end = usize::from_str_radix(e, 16).ok()?;
    let perms = w.next()?.as_bytes();
    if perms.len() != 4 {
        return None;
    }
    let (_offset, _dev, _inode) = (w.next()?, w.next()?, w.next()?);
    let path = w.next().unwrap_or("");
    // A file (not [heap], [stack], [vdso], anonymous), readable, never writable.
    let ok = path.starts_with('/') && perms[0] == b'r' && perms[1] != b'w';
    Some((Region { start, end, rss: 0 }, ok, None))
}

/// Drop this process's clean, read-only file pages (see the module doc).
/// Returns the resident bytes released.
pub fn shed() -> Result<usize, ShedError> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(ShedError::Smaps)?;
    let mut released = 0;
    for r in droppable(&smaps) {
        // SAFETY: the range is a whole mapping of ours holding only clean
        // read-only file pages; MADV_DONTNEED drops their page-table entries
        // and later accesses refault the same bytes from the file.
        let rc = unsafe {
            libc::madvise(
                r.start as *mut libc::c_void,
                r.end - r.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released += r.rss;
        }
    }
    // Give freed heap back as well (glibc keeps it otherwise).
    unsafe { libc::malloc_trim(0) };
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
00200000-00656000 r--p 00000000 fe:00 6277066    /usr/bin/shibafu
Size:               4440 kB
Rss:                 192 kB
Anonymous:             0 kB
Locked:                0 kB
00656000-01705000 r-xp 00455000 fe:00 6277066    /usr/bin/shibafu
Rss:                 704 kB
Anonymous:             0 kB
01705000-017ce000 r--p 01503000 fe:00 6277066    /usr/bin/shibafu
Rss:                 312 kB
Anonymous:            44 kB
017ce000-017d4000 rw-p 015cb000 fe:00 6277066    /usr/bin/shibafu
Rss:                  24 kB
Anonymous:             8 kB
1a4be000-1a5af000 rw-p 00000000 00:00 0          [heap]
Rss:                 124 kB
Anonymous:           124 kB
7f3988cca000-7f3988e20000 r-xp 00026000 fe:00 326279 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 448 kB
Anonymous:             0 kB
Locked:                4 kB
7f3988e21000-7f3988e30000 r-xp 00026000 fe:00 326280 /usr/lib/x86_64-linux-gnu/libm.so.6
Rss:                   0 kB
Anonymous:             0 kB
7fff0000-7fff2000 r-xp 00000000 00:00 0          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let r = droppable(SAMPLE);
        assert_eq!(
            r,
            vec![
                Region {
                    start: 0x0020_0000,
                    end: 0x0065_6000,
                    rss: 192 * 1024
                },
                Region {
                    start: 0x0065_6000,
                    end: 0x0170_5000,
                    rss: 704 * 1024
                },
            ],
            "RELRO with COW pages, rw data, heap, locked libc, empty libm and vdso stay"
        );
    }

    fn rss_file_kb() -> usize {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[test]
    fn shedding_releases_file_pages_and_the_process_keeps_working() {
        let before = rss_file_kb();
        let released = shed().unwrap();
        assert!(released > 0, "nothing was droppable");
        let after = rss_file_kb();
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // Code and read-only data refault transparently.
        let v: Vec<String> = (0..100).map(|i| format!("{i:x}")).collect();
        assert_eq!(v.join("").len(), 16 + 84 * 2);
    }
}
