//! Measurements the benchmarks share: this process's peak resident memory (and resetting it
//! between the phases of one run).

/// Peak resident memory of this process since it started or since [`reset_peak_rss`] (Linux's
/// VmHWM), in MB; None where the OS does not report it.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Start a new peak: Linux resets VmHWM to the current resident size when "5" is written to
/// `/proc/self/clear_refs` (a no-op elsewhere), so each phase's peak is its own.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_peak_drops_to_what_is_resident_now() {
        let Some(_) = peak_rss_mb() else {
            eprintln!("skipped: no /proc/self/status here");
            return;
        };
        // touch 200 MB, free it, and the peak stays until it is reset
        let big = vec![1u8; 200 << 20];
        std::hint::black_box(&big);
        drop(big);
        let before = peak_rss_mb().unwrap();
        reset_peak_rss();
        let after = peak_rss_mb().unwrap();
        assert!(
            after < before - 100.0,
            "peak {before} MB, after reset {after} MB"
        );
    }
}
