//! A profile of the CPU fast path's matrix products, by shape and layout (the `gemm-profile`
//! feature; without it nothing is recorded and the products pay nothing): calls, time and the
//! rate reached, to see which products of a step run below the GEMM library's peak.
//! `cargo bench --features gemm-profile --bench nvae_text` prints it after each workload.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a product is filed under: `(lhs, rhs)` layouts (`'N'` row-major, `'T'` transposed),
/// whether it accumulates, and `(k, n)`; `m` (rows, often the batch's token count) varies from
/// step to step and is summed instead.
type Key = ((char, char), bool, (usize, usize));

/// Calls, total time and multiply-adds per key.
static PROFILE: Mutex<BTreeMap<Key, (u64, Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Times one product from its start to its drop.
pub(crate) struct Timer {
    key: Key,
    macs: u64,
    started: Instant,
}

impl Timer {
    /// A product of `(m, k, n)` with the given operand layouts (`true`: transposed).
    pub(crate) fn start(
        (m, k, n): (usize, usize, usize),
        (lhs_t, rhs_t): (bool, bool),
        accumulate: bool,
    ) -> Self {
        let layout = |t: bool| if t { 'T' } else { 'N' };
        Self {
            key: ((layout(lhs_t), layout(rhs_t)), accumulate, (k, n)),
            macs: (m * k * n) as u64,
            started: Instant::now(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let mut profile = PROFILE.lock().unwrap_or_else(|e| e.into_inner());
        let entry = profile.entry(self.key).or_default();
        *entry = (entry.0 + 1, entry.1 + elapsed, entry.2 + self.macs);
    }
}

/// Forgets what was recorded so far (a warm-up's products).
pub fn clear() {
    PROFILE.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The profile since the last `take_report` or `clear`, as a table of the `rows` most
/// time-consuming keys (then cleared).
pub fn take_report(rows: usize) -> String {
    let profile = std::mem::take(&mut *PROFILE.lock().unwrap_or_else(|e| e.into_inner()));
    let gflops = |macs: u64, t: Duration| 2.0 * macs as f64 / t.as_secs_f64().max(1e-12) / 1e9;
    let (time, macs) = profile
        .values()
        .fold((Duration::ZERO, 0), |(t, m), v| (t + v.1, m + v.2));
    let mut lines = vec![format!(
        "GEMM profile: {:.1} ms, {:.2} GMAC, {:.1} GFLOP/s over all products",
        time.as_secs_f64() * 1e3,
        macs as f64 / 1e9,
        gflops(macs, time)
    )];
    lines.push("layout acc        k      n    calls      ms  GFLOP/s  MMAC/call".into());
    let mut keys: Vec<_> = profile.into_iter().collect();
    keys.sort_by_key(|(_, v)| std::cmp::Reverse(v.1));
    for (((l, r), acc, (k, n)), (calls, t, macs)) in keys.into_iter().take(rows) {
        lines.push(format!(
            "{l}{r}     {:<5} {k:>6} {n:>6} {calls:>8} {:>7.1} {:>8.1} {:>10.2}",
            acc,
            t.as_secs_f64() * 1e3,
            gflops(macs, t),
            macs as f64 / calls as f64 / 1e6
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_filed_by_layout_and_summed() {
        clear();
        for m in [3, 5] {
            drop(Timer::start((m, 4, 6), (true, false), false));
        }
        let report = take_report(10);
        let row = report.lines().nth(2).expect("one key");
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[..5], ["TN", "false", "4", "6", "2"], "{report}");
        // 8 rows × 4 × 6 = 192 multiply-adds over 2 calls.
        assert_eq!(fields[7], "0.00");
        assert!(report.starts_with("GEMM profile:") && report.contains("0.00 GMAC"));
        assert_eq!(take_report(10).lines().count(), 2, "cleared");
    }
}
