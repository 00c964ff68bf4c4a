//! glibc's malloc arenas, capped at one per core (at most [`MAX_ARENAS`]).
//!
//! glibc gives a thread that finds the arenas busy a new arena, up to eight per core, and
//! keeps what each arena once held mapped: a freed tensor's pages stay with the arena that
//! served it, to be reused only by the threads that land on that arena. The engine
//! allocates and frees tensors of a few MB from the actor, rayon and tokio threads in turn, so
//! the process's RSS climbs to a different high-water mark from run to run with no leak
//! behind it. Measured with the 60-second soak (`scripts/soak.sh`, 2 cores; issue #14, stop
//! 27): peak RSS 1.15–1.29 GB and growth after warm-up +6.2 to +8.7% with glibc's default,
//! 0.95–1.03 GB with two arenas at the same throughput. (A fixed mmap threshold, which
//! returns every large block to the kernel on free, held the peak at 0.8 GB but cost 28% of
//! the throughput in page faults.)
//!
//! The cap is set only when the user has not chosen one (`MALLOC_ARENA_MAX` or
//! `glibc.malloc.arena_max` in `GLIBC_TUNABLES`), and only on glibc.

/// The most arenas the cap allows, whatever the core count: beyond it the lock of a shared
/// arena costs less than the memory a private one holds.
pub const MAX_ARENAS: usize = 8;

/// Caps the arenas at one per core (within `[2, MAX_ARENAS]`) unless the user chose a count
/// or the C library is not glibc. Returns the cap set. Call before any thread starts.
pub fn cap() -> Option<usize> {
    if user_chose(
        std::env::var_os("MALLOC_ARENA_MAX").is_some(),
        std::env::var("GLIBC_TUNABLES").ok().as_deref(),
    ) {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let n = arenas_for(cores);
    set(n).then_some(n)
}

/// The cap for `cores` cores.
fn arenas_for(cores: usize) -> usize {
    cores.clamp(2, MAX_ARENAS)
}

/// Whether the environment already sets the arena count.
fn user_chose(arena_max_set: bool, tunables: Option<&str>) -> bool {
    arena_max_set
        || tunables.is_some_and(|t| {
            t.split(':')
                .any(|kv| kv.trim_start().starts_with("glibc.malloc.arena_max"))
        })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set(n: usize) -> bool {
    let Ok(n) = libc::c_int::try_from(n) else {
        return false;
    };
    // SAFETY: `mallopt` only changes an allocator parameter; it is called before the
    // process starts any thread.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_n: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_arena_per_core_within_bounds() {
        assert_eq!(arenas_for(1), 2);
        assert_eq!(arenas_for(2), 2);
        assert_eq!(arenas_for(6), 6);
        assert_eq!(arenas_for(64), MAX_ARENAS);
    }

    #[test]
    fn a_count_the_user_chose_is_kept() {
        assert!(user_chose(true, None));
        assert!(user_chose(false, Some("glibc.malloc.arena_max=4")));
        assert!(user_chose(
            false,
            Some("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1")
        ));
        assert!(!user_chose(false, Some("glibc.malloc.tcache_count=0")));
        assert!(!user_chose(false, None));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_cap() {
        assert!(set(2));
    }
}
