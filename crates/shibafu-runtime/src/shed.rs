//! Dropping the supervisor's resident copies of code and data it no longer
//! uses.
//!
//! A supervisor runs much of libcontainer, serde and libc while it creates
//! and starts the container, then idles in one `poll(2)` loop for the
//! container's lifetime. The pages touched on the way stay mapped: file
//! pages are shared page cache, but they count in the supervisor's RSS (and
//! in the OOM killer's view of it) for as long as it lives. Once the work is
//! done, [`shed`] gives back:
//!
//! - **Clean file pages** of every private, non-writable file mapping (code,
//!   read-only data, RELRO). `/proc/self/pagemap` tells per page whether it
//!   is present and whether it is the file's page cache page or an anonymous
//!   copy-on-write copy (relocations, `.got`). `MADV_DONTNEED` is applied only
//!   to runs of present file pages (the whole mapping when it has no COW page
//!   at all): a later access refaults the same file page, a minor fault
//!   without I/O. COW pages hold data the file does not have and are never
//!   advised. Writable mappings are left alone: a write between reading
//!   pagemap and advising would turn a file page into a COW page, and
//!   advising that would lose the write; a page without write permission
//!   cannot change behind our back.
//! - **Dead stack**: the main thread's stack pages well below the stack
//!   pointer (deep start-up call chains left them dirty; nothing below the
//!   stack pointer is live).
//! - **Free heap**, with `malloc_trim(0)` once shed's own buffers are freed.
//!
//! The kernel maps up to 64 KiB of page cache around every file fault
//! ("fault-around"), so whatever code runs after the advice costs whole
//! 64 KiB windows again. The advice is therefore the very last thing done:
//! [`shed`] is inlined into its caller (the idle loop), the plan lives on the
//! stack (no `free` after it), so only the windows of the loop itself are
//! refaulted.

use std::io;
use std::os::unix::fs::FileExt;

const PAGE: usize = 4096;
/// Ranges one pass can advise (whole mappings count once; only mappings
/// mixing COW and file pages need several). Left-overs wait for the next
/// pass.
const MAX_RANGES: usize = 96;
/// Stack kept below the stack pointer of the advising frame: far more than
/// the red zone (128 bytes), that frame and the `madvise` call it makes.
const STACK_MARGIN: usize = 8 * 1024;

/// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_FILE: u64 = 1 << 61;

/// Why shedding failed (the supervisor logs it and carries on).
#[derive(Debug, thiserror::Error)]
pub enum ShedError {
    #[error("reading /proc/self/maps: {0}")]
    Maps(io::Error),
    #[error("reading /proc/self/pagemap: {0}")]
    Pagemap(io::Error),
}

/// What a mapping is backed by, as far as shedding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A file (path starting with `/`).
    File,
    /// The main thread's stack.
    Stack,
    /// Anything else: heap, anonymous, vdso/vvar, ...
    Other,
}

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub end: usize,
    pub read: bool,
    pub write: bool,
    /// `p` (private, copy-on-write) rather than `s` (shared).
    pub private: bool,
    pub backing: Backing,
}

impl Mapping {
    /// Clean file pages of this mapping may be dropped (see the module doc).
    pub fn sheddable(&self) -> bool {
        self.backing == Backing::File && self.private && !self.write
    }
}

/// Parses one `/proc/<pid>/maps` line:
/// `start-end perms offset dev inode [path]`.
pub fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut w = line.split_whitespace();
    let (s, e) = w.next()?.split_once('-')?;
    let start = usize::from_str_radix(s, 16).ok()?;
    let end = usize::from_str_radix(e, 16).ok()?;
    let perms = w.next()?.as_bytes();
    if perms.len() != 4 || end < start {
        return None;
    }
    let (_offset, _dev, _inode) = (w.next()?, w.next()?, w.next()?);
    // The path may contain spaces ("... (deleted)"): only its start matters.
    let path = w.next().unwrap_or("");
    let backing = if path.starts_with('/') {
        Backing::File
    } else if path == "[stack]" {
        Backing::Stack
    } else {
        Backing::Other
    };
    Some(Mapping {
        start,
        end,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        private: perms[3] == b'p',
        backing,
    })
}

/// An address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    pub start: usize,
    pub end: usize,
}

/// The ranges to advise, collected without touching the heap: the plan is
/// applied after `malloc_trim`, and nothing may be freed after the advice.
#[derive(Debug)]
pub struct Plan {
    ranges: [Range; MAX_RANGES],
    len: usize,
    /// Resident file bytes the ranges hold.
    pub file_bytes: usize,
    /// Present pages of sheddable mappings that could not be planned
    /// (capacity), left for the next pass.
    pub skipped_bytes: usize,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            ranges: [Range::default(); MAX_RANGES],
            len: 0,
            file_bytes: 0,
            skipped_bytes: 0,
        }
    }
}

impl Plan {
    pub fn ranges(&self) -> &[Range] {
        &self.ranges[..self.len]
    }

    fn push(&mut self, r: Range) -> bool {
        if self.len == MAX_RANGES {
            return false;
        }
        self.ranges[self.len] = r;
        self.len += 1;
        true
    }
}

/// Builds the plan for one mapping from its pagemap entries, fed in address
/// order (in as many chunks as the caller reads).
pub struct MappingScan<'a> {
    plan: &'a mut Plan,
    mapping: Range,
    /// Index in `plan` of this mapping's first range.
    first: usize,
    /// The run of present file pages being extended.
    run: Option<Range>,
    /// A present page that is not a file page (a COW copy) was seen.
    saw_anon: bool,
    /// The plan was full before all runs fit.
    overflow: bool,
    file_bytes: usize,
}

impl<'a> MappingScan<'a> {
    pub fn new(plan: &'a mut Plan, mapping: Range) -> Self {
        let first = plan.len;
        MappingScan {
            plan,
            mapping,
            first,
            run: None,
            saw_anon: false,
            overflow: false,
            file_bytes: 0,
        }
    }

    /// `entries`: the pagemap entries of consecutive pages from `addr`.
    pub fn feed(&mut self, addr: usize, entries: &[u64]) {
        for (i, &e) in entries.iter().enumerate() {
            let page = addr + i * PAGE;
            let file = e & PM_PRESENT != 0 && e & PM_FILE != 0;
            if e & PM_PRESENT != 0 && !file {
                self.saw_anon = true;
            }
            if file {
                self.file_bytes += PAGE;
                match &mut self.run {
                    Some(r) if r.end == page => r.end += PAGE,
                    _ => {
                        self.close_run();
                        self.run = Some(Range {
                            start: page,
                            end: page + PAGE,
                        });
                    }
                }
            } else {
                self.close_run();
            }
        }
    }

    fn close_run(&mut self) {
        if let Some(r) = self.run.take() {
            if !self.plan.push(r) {
                self.overflow = true;
            }
        }
    }

    /// Ends the mapping: without COW pages it is advised whole (one call,
    /// and the gaps cost nothing); otherwise run by run.
    pub fn finish(mut self) {
        self.close_run();
        if self.file_bytes == 0 {
            return;
        }
        if !self.saw_anon {
            self.plan.len = self.first;
            self.overflow = !self.plan.push(self.mapping);
        }
        if self.overflow {
            // Count what did not fit as skipped, what did as planned.
            let planned: usize = self.plan.ranges[self.first..self.plan.len]
                .iter()
                .map(|r| r.end - r.start)
                .sum();
            let planned = planned.min(self.file_bytes);
            self.plan.skipped_bytes += self.file_bytes - planned;
            self.plan.file_bytes += planned;
        } else {
            self.plan.file_bytes += self.file_bytes;
        }
    }
}

/// Decodes little-endian pagemap bytes (as read from the file).
pub fn entries_from_bytes(bytes: &[u8], out: &mut [u64]) -> usize {
    let n = (bytes.len() / 8).min(out.len());
    for (i, o) in out.iter_mut().take(n).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        *o = u64::from_le_bytes(b);
    }
    n
}

/// The stack range that holds no live data: from the bottom of the stack
/// mapping up to `STACK_MARGIN` below `sp`, page-aligned. None when `sp` is
/// not on that stack (another thread) or nothing lies below the margin.
pub fn dead_stack(stack: &Mapping, sp: usize) -> Option<Range> {
    if stack.backing != Backing::Stack || sp < stack.start || sp >= stack.end {
        return None;
    }
    let end = sp.checked_sub(STACK_MARGIN)? & !(PAGE - 1);
    (end > stack.start).then_some(Range {
        start: stack.start,
        end,
    })
}

/// Reads pagemap entries of `r` and feeds them to `f` in chunks.
fn scan_pagemap(
    pm: &std::fs::File,
    r: Range,
    mut f: impl FnMut(usize, &[u64]),
) -> Result<(), ShedError> {
    const CHUNK: usize = 512;
    let mut bytes = [0u8; CHUNK * 8];
    let mut entries = [0u64; CHUNK];
    let mut addr = r.start;
    while addr < r.end {
        let pages = ((r.end - addr) / PAGE).min(CHUNK);
        let want = &mut bytes[..pages * 8];
        let off = (addr / PAGE * 8) as u64;
        let n = pm.read_at(want, off).map_err(ShedError::Pagemap)?;
        if n < 8 {
            return Err(ShedError::Pagemap(io::ErrorKind::UnexpectedEof.into()));
        }
        let got = entries_from_bytes(&want[..n], &mut entries);
        f(addr, &entries[..got]);
        addr += got * PAGE;
    }
    Ok(())
}

/// What [`shed`] released.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    /// Resident clean file pages dropped.
    pub file_bytes: usize,
    /// Resident dead stack pages dropped.
    pub stack_bytes: usize,
    /// Droppable file pages left for the next pass (plan full).
    pub skipped_bytes: usize,
}

/// Plans a pass over this process (the plan is returned, not applied) and
/// trims the heap. Returns the main thread's stack mapping, if found. Not
/// inlined: everything it runs may be dropped by the plan and is not needed
/// again until the next pass.
#[inline(never)]
fn prepare(plan: &mut Plan) -> Result<Option<Range>, ShedError> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(ShedError::Maps)?;
    let pm = std::fs::File::open("/proc/self/pagemap").map_err(ShedError::Pagemap)?;
    let mut stack = None;
    for m in maps.lines().filter_map(parse_maps_line) {
        let r = Range {
            start: m.start,
            end: m.end,
        };
        if m.backing == Backing::Stack {
            stack = Some(r);
        }
        if !m.sheddable() {
            continue;
        }
        let mut scan = MappingScan::new(plan, r);
        scan_pagemap(&pm, r, |a, e| scan.feed(a, e))?;
        scan.finish();
    }
    drop(maps);
    drop(pm);
    // Give back the heap's free pages, now that our buffers are freed too.
    // SAFETY: plain glibc call, no preconditions.
    unsafe { libc::malloc_trim(0) };
    Ok(stack)
}

/// Drops the dead part of the stack mapping `stack` if it is this thread's
/// (see [`dead_stack`]); returns the resident bytes dropped. Not inlined and
/// with a small frame: the stack pointer is taken here, below every live
/// frame, and nothing of this frame or the calls it makes reaches
/// `STACK_MARGIN` below it.
#[inline(never)]
fn drop_dead_stack(stack: Range) -> usize {
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    let m = Mapping {
        start: stack.start,
        end: stack.end,
        read: true,
        write: true,
        private: true,
        backing: Backing::Stack,
    };
    let Some(dead) = dead_stack(&m, sp) else {
        return 0;
    };
    // Resident pages, counted with a small buffer (the frame stays small).
    let mut resident = 0;
    if let Ok(pm) = std::fs::File::open("/proc/self/pagemap") {
        let mut b = [0u8; 64 * 8];
        let mut addr = dead.start;
        while addr < dead.end {
            let pages = ((dead.end - addr) / PAGE).min(64);
            match pm.read_at(&mut b[..pages * 8], (addr / PAGE * 8) as u64) {
                Ok(n) if n >= 8 => {
                    resident += b[..n]
                        .chunks_exact(8)
                        .filter(|e| e[7] & 0x80 != 0) // PM_PRESENT, little-endian
                        .count();
                    addr += n / 8 * PAGE;
                }
                _ => break,
            }
        }
    }
    // SAFETY: `dead` lies STACK_MARGIN below a local of this frame, under
    // every live frame of this thread: nothing there is live, and the kernel
    // hands out zeroed pages if the stack grows into it again.
    if unsafe { madvise_dontneed(dead) } != 0 {
        return 0;
    }
    resident * PAGE
}

/// `MADV_DONTNEED` on `r`.
///
/// # Safety
/// `r` must hold only clean file pages of private mappings or memory with
/// no live data.
#[inline(always)]
unsafe fn madvise_dontneed(r: Range) -> libc::c_int {
    libc::madvise(
        r.start as *mut libc::c_void,
        r.end - r.start,
        libc::MADV_DONTNEED,
    )
}

/// Drop this process's clean file pages, dead stack and free heap (see the
/// module doc). Call it from the idle loop itself: it is inlined there so
/// that the code running after the advice is code the loop refaults anyway.
#[inline(always)]
pub fn shed() -> Result<Shed, ShedError> {
    let mut plan = Plan::default();
    let stack = prepare(&mut plan)?;
    // After `prepare`, whose deep calls dirtied the stack, and from here,
    // so that the margin is counted from the idle loop's own frame.
    let stack_bytes = stack.map_or(0, drop_dead_stack);
    let mut out = Shed {
        file_bytes: plan.file_bytes,
        stack_bytes,
        skipped_bytes: plan.skipped_bytes,
    };
    for &r in plan.ranges() {
        // SAFETY: every range is a run of present file pages (or a whole
        // mapping without COW pages) of a private mapping without write
        // permission: refaults map the same file bytes again.
        if unsafe { madvise_dontneed(r) } != 0 {
            // EINVAL: mlock()ed; nothing was dropped there.
            out.file_bytes = out.file_bytes.saturating_sub(r.end - r.start);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
00200000-00669000 r--p 00000000 fe:00 7340169                            /usr/bin/shibafu
00669000-01796000 r-xp 00468000 fe:00 7340169                            /usr/bin/shibafu
01796000-01860000 r--p 01594000 fe:00 7340169                            /usr/bin/shibafu
01860000-01866000 rw-p 0165d000 fe:00 7340169                            /usr/bin/shibafu
2b665000-2b777000 rw-p 00000000 00:00 0                                  [heap]
7f063cccc000-7f063ccf2000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f0600000000-7f0600001000 r--s 00000000 00:05 12                         /dev/zero (deleted)
7f0600002000-7f0600003000 ---p 00000000 00:00 0 
7fff09a5b000-7fff09a7c000 rw-p 00000000 00:00 0                          [stack]
7fff09b8a000-7fff09b8c000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn maps_lines_are_parsed_and_only_read_only_private_files_are_sheddable() {
        let ms: Vec<Mapping> = MAPS.lines().filter_map(parse_maps_line).collect();
        assert_eq!(ms.len(), 10);
        assert_eq!(
            ms[2],
            Mapping {
                start: 0x0179_6000,
                end: 0x0186_0000,
                read: true,
                write: false,
                private: true,
                backing: Backing::File,
            }
        );
        assert_eq!(ms[8].backing, Backing::Stack);
        assert_eq!(ms[7].backing, Backing::Other, "anonymous, no path");
        let shed: Vec<usize> = ms
            .iter()
            .enumerate()
            .filter(|(_, m)| m.sheddable())
            .map(|(i, _)| i)
            .collect();
        // text, rodata, RELRO and libc; not data (rw), heap, the shared
        // mapping, anonymous, stack or vdso.
        assert_eq!(shed, vec![0, 1, 2, 5]);
        assert_eq!(parse_maps_line("garbage"), None);
        assert_eq!(parse_maps_line("2000-1000 r--p 0 0:0 0 /x"), None);
    }

    const P: u64 = PM_PRESENT;
    const F: u64 = PM_PRESENT | PM_FILE;

    fn plan_of(start: usize, entries: &[u64], chunk: usize) -> Plan {
        let mut plan = Plan::default();
        let r = Range {
            start,
            end: start + entries.len() * PAGE,
        };
        let mut s = MappingScan::new(&mut plan, r);
        for (i, c) in entries.chunks(chunk).enumerate() {
            s.feed(start + i * chunk * PAGE, c);
        }
        s.finish();
        plan
    }

    #[test]
    fn runs_of_file_pages_skip_cow_pages_across_chunks() {
        let b = 0x10_0000;
        // file file | cow | absent | file file file | swapped cow | file
        let e = [F, F, P, 0, F, F, F, 1 << 62, F];
        for chunk in [1, 2, 3, 4, 9] {
            let plan = plan_of(b, &e, chunk);
            assert_eq!(
                plan.ranges(),
                &[
                    Range {
                        start: b,
                        end: b + 2 * PAGE
                    },
                    Range {
                        start: b + 4 * PAGE,
                        end: b + 7 * PAGE
                    },
                    Range {
                        start: b + 8 * PAGE,
                        end: b + 9 * PAGE
                    },
                ],
                "chunk {chunk}"
            );
            assert_eq!(plan.file_bytes, 6 * PAGE);
        }
    }

    #[test]
    fn a_mapping_without_cow_pages_is_advised_whole_and_an_empty_one_not_at_all() {
        let b = 0x20_0000;
        let plan = plan_of(b, &[F, 0, F, F, 0, 0, F], 3);
        assert_eq!(
            plan.ranges(),
            &[Range {
                start: b,
                end: b + 7 * PAGE
            }]
        );
        assert_eq!(plan.file_bytes, 4 * PAGE);
        let plan = plan_of(b, &[0, 0, P, 0], 4);
        assert!(plan.ranges().is_empty(), "only COW / absent pages");
        assert_eq!(plan.file_bytes, 0);
    }

    #[test]
    fn a_full_plan_keeps_what_fits_and_counts_the_rest_as_skipped() {
        // Alternating file / COW pages: one range per file page.
        let e: Vec<u64> = (0..2 * (MAX_RANGES + 10))
            .map(|i| if i % 2 == 0 { F } else { P })
            .collect();
        let plan = plan_of(0x40_0000, &e, 64);
        assert_eq!(plan.ranges().len(), MAX_RANGES);
        assert_eq!(plan.file_bytes, MAX_RANGES * PAGE);
        assert_eq!(plan.skipped_bytes, 10 * PAGE);
        assert!(plan.ranges().iter().all(|r| r.end - r.start == PAGE));
    }

    #[test]
    fn pagemap_bytes_decode_little_endian() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&F.to_le_bytes());
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3]); // a torn entry is ignored
        let mut out = [0u64; 4];
        assert_eq!(entries_from_bytes(&bytes, &mut out), 2);
        assert_eq!(&out[..2], &[F, 7]);
        let mut small = [0u64; 1];
        assert_eq!(entries_from_bytes(&bytes, &mut small), 1);
    }

    #[test]
    fn dead_stack_keeps_the_margin_and_needs_sp_on_that_stack() {
        let st = Mapping {
            start: 0x7000_0000,
            end: 0x7010_0000,
            read: true,
            write: true,
            private: true,
            backing: Backing::Stack,
        };
        let sp = 0x700f_0123;
        assert_eq!(
            dead_stack(&st, sp),
            Some(Range {
                start: 0x7000_0000,
                end: (sp - STACK_MARGIN) & !(PAGE - 1)
            })
        );
        assert!((sp - dead_stack(&st, sp).unwrap().end) >= STACK_MARGIN);
        assert_eq!(dead_stack(&st, 0x6000_0000), None, "another thread's stack");
        assert_eq!(
            dead_stack(&st, 0x7000_1000),
            None,
            "nothing below the margin"
        );
        let other = Mapping {
            backing: Backing::Other,
            ..st
        };
        assert_eq!(dead_stack(&other, sp), None);
    }

    fn status_kb(key: &str) -> usize {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    fn pagemap(addr: usize, pages: usize) -> Vec<u64> {
        let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut out = Vec::new();
        scan_pagemap(
            &pm,
            Range {
                start: addr,
                end: addr + pages * PAGE,
            },
            |_, e| out.extend_from_slice(e),
        )
        .unwrap();
        out
    }

    /// The tests that shed the whole process and the one that watches a
    /// mapping's pages would see each other's advice.
    static WHOLE_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn shedding_releases_file_pages_and_the_process_keeps_working() {
        let _g = WHOLE_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
        let before = status_kb("RssFile:");
        let s = shed().unwrap();
        assert!(s.file_bytes > 0, "nothing was droppable");
        let after = status_kb("RssFile:");
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // Code and read-only data refault transparently.
        let v: Vec<String> = (0..100).map(|i| format!("{i:x}")).collect();
        assert_eq!(v.join("").len(), 16 + 84 * 2);
    }

    #[inline(never)]
    fn dirty_deep_stack() -> u8 {
        let mut a = [0u8; 96 * 1024];
        for (i, x) in a.iter_mut().enumerate().step_by(512) {
            *x = i as u8 | 1;
        }
        std::hint::black_box(&mut a)[4096]
    }

    /// On a thread of its own (its stack is a plain mapping): the pages a
    /// deep call left below the stack pointer are dropped, the live frames
    /// are not, and the thread carries on.
    #[test]
    fn dead_stack_pages_are_dropped_and_live_frames_kept() {
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                let live = [7u8; 2048];
                let here = std::hint::black_box(&live) as *const _ as usize;
                let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
                let m = maps
                    .lines()
                    .filter_map(parse_maps_line)
                    .find(|m| m.start <= here && here < m.end)
                    .unwrap();
                assert_ne!(dirty_deep_stack(), 0);
                let deep = here - 64 * 1024;
                assert!(pagemap(deep & !(PAGE - 1), 1)[0] & PM_PRESENT != 0);
                let dropped = drop_dead_stack(Range {
                    start: m.start,
                    end: m.end,
                });
                assert!(dropped >= 64 * 1024, "dropped {dropped}");
                assert_eq!(pagemap(deep & !(PAGE - 1), 1)[0] & PM_PRESENT, 0);
                assert!(std::hint::black_box(&live).iter().all(|&b| b == 7));
                // The stack still grows down as before.
                assert_ne!(dirty_deep_stack(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// A private file mapping with copy-on-write pages, made read-only (as
    /// RELRO is): the file pages are dropped, the written copies survive.
    #[test]
    fn cow_pages_survive_and_file_pages_are_dropped() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let _g = WHOLE_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
        let mut f = tempfile::tempfile().unwrap();
        let pages = 8;
        for i in 0..pages {
            f.write_all(&vec![b'a' + i as u8; PAGE]).unwrap();
        }
        f.flush().unwrap();
        // SAFETY: a fresh private mapping of our own file, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = p as usize;
        let mem = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, pages * PAGE) };
        // Pages 1 and 5 become private copies; the others are read.
        mem[PAGE] = b'X';
        mem[5 * PAGE + 7] = b'Y';
        let sum: usize = (0..pages).map(|i| mem[i * PAGE + 1] as usize).sum();
        assert!(sum > 0);
        assert_eq!(
            unsafe { libc::mprotect(p, pages * PAGE, libc::PROT_READ) },
            0
        );
        let before = pagemap(base, pages);
        let file_present = |e: &[u64]| {
            e.iter()
                .enumerate()
                .filter(|(_, &x)| x & F == F)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        assert!(!file_present(&before).is_empty(), "{before:x?}");
        assert!(!file_present(&before).contains(&1));
        assert!(!file_present(&before).contains(&5));

        // The planner sees the mapping like any other; apply it alone.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let m = maps
            .lines()
            .filter_map(parse_maps_line)
            .find(|m| m.start == base)
            .unwrap();
        assert!(m.sheddable(), "{m:?}");
        let mut plan = Plan::default();
        let r = Range {
            start: m.start,
            end: m.end,
        };
        let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut scan = MappingScan::new(&mut plan, r);
        scan_pagemap(&pm, r, |a, e| scan.feed(a, e)).unwrap();
        scan.finish();
        assert!(plan.ranges().len() >= 2, "{:?}", plan.ranges());
        for &r in plan.ranges() {
            assert_eq!(unsafe { madvise_dontneed(r) }, 0);
        }
        let after = pagemap(base, pages);
        assert!(file_present(&after).is_empty(), "{after:x?}");
        assert!(after[1] & PM_PRESENT != 0 && after[5] & PM_PRESENT != 0);
        // The copies kept their writes; the rest reads the file again.
        assert_eq!(mem[PAGE], b'X');
        assert_eq!(mem[PAGE + 1], b'b');
        assert_eq!(mem[5 * PAGE + 7], b'Y');
        for i in [0, 2, 3, 4, 6, 7] {
            assert!(
                mem[i * PAGE..(i + 1) * PAGE]
                    .iter()
                    .all(|&c| c == b'a' + i as u8),
                "page {i}"
            );
        }
        unsafe { libc::munmap(p, pages * PAGE) };
    }
}
