//! The few Linux calls the proxy needs that neither std nor rustix offers
//! as safe functions. The proxy forbids `unsafe`; this crate holds it, each
//! call behind a function whose arguments cannot make it unsound, and each
//! call only advice: where the kernel cannot take it (or off Linux) nothing
//! changes but speed.
//!
//! - [`advise_huge_pages`]: transparent huge pages for a long-lived buffer
//!   (argon2's 19 MiB, read at random).
//! - [`start_writeback`]: begin writing a file's dirty range to disk while
//!   more of it arrives, so the final fsync has little left to do.
#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]

use std::mem::MaybeUninit;

/// The size huge pages are aligned to on x86-64 and arm64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the 2 MiB-aligned part of `memory` with huge
/// pages from its next page fault on (`madvise(MADV_HUGEPAGE)`). Where
/// `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise`, the default
/// of many distributions, anonymous memory gets huge pages only when asked.
/// The contents are not touched. Call it on memory not yet written (a
/// `Vec`'s spare capacity) so that its first touch faults in huge pages.
/// Returns whether the kernel took the advice (false when no 2 MiB-aligned
/// stretch lies inside `memory`, or off Linux).
pub fn advise_huge_pages<T>(memory: &mut [MaybeUninit<T>]) -> bool {
    let start = memory.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(memory);
    let first = start.next_multiple_of(HUGE_PAGE);
    let last = end / HUGE_PAGE * HUGE_PAGE;
    if first >= last {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `first..last` lies inside a slice this function holds a
        // unique borrow of, and MADV_HUGEPAGE changes only how the kernel
        // backs those pages, never their contents or their mapping; it
        // cannot free or move them.
        unsafe { libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Starts writing `file`'s dirty pages in `offset..offset + length` to disk
/// and returns without waiting for them (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`, as PostgreSQL's `*_flush_after` does). Not a
/// durability guarantee — an fsync still is — but a file written this way
/// as it grows has little left for its fsync. Returns whether the kernel
/// took it.
pub fn start_writeback(file: &std::fs::File, offset: u64, length: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
            return false;
        };
        // SAFETY: the descriptor is borrowed from a live `File` for the
        // duration of the call; the kernel only reads the range's pages.
        unsafe { libc::sync_file_range(file.as_raw_fd(), offset, length, libc::SYNC_FILE_RANGE_WRITE) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, length);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn too_small_for_a_huge_page_is_left_alone() {
        let mut small: Vec<u64> = Vec::with_capacity(1024);
        assert!(!advise_huge_pages(small.spare_capacity_mut()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_buffer_takes_the_advice_and_keeps_its_contents() {
        let n = 3 * HUGE_PAGE / 8;
        let mut big: Vec<u64> = Vec::with_capacity(n);
        // Whether huge pages are handed out depends on the system's THP
        // setting; taking the advice does not (unless THP is compiled out).
        let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists();
        assert_eq!(advise_huge_pages(big.spare_capacity_mut()), thp);
        big.extend((0..n as u64).map(|i| i * 7));
        assert!(big.iter().enumerate().all(|(i, &v)| v == i as u64 * 7));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn writeback_of_a_written_range_is_taken_and_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("fluxbase-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&[7u8; 1 << 20]).unwrap();
        assert!(start_writeback(&file, 0, 1 << 20));
        assert!(start_writeback(&file, 1 << 20, 0), "length 0: to the end of the file");
        file.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 1 << 20]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
