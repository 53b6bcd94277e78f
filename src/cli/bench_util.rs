//! Measurements the benchmarks share: this process's peak resident memory (and resetting it
//! between the phases of one run) and its CPU time.

/// Peak resident memory of this process since it started or since [`reset_peak_rss`] (Linux's
/// VmHWM), in bytes; None where the OS does not report it.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// [`peak_rss`] in MB.
pub fn peak_rss_mb() -> Option<f64> {
    peak_rss().map(|b| b as f64 / (1024.0 * 1024.0))
}

/// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`: on
/// a shared machine wall time includes waiting for a core, CPU time does not.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'; utime
    // and stime are the 12th and 13th of them, in ticks of 1/100 s.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
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
