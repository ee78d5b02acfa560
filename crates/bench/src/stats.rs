//! Measurement helpers: the process-wide microsecond clock, latency histograms, readings
//! of a process's CPU time and RSS from /proc, and CSV output.

use std::{
    fs,
    io::Write,
    path::Path,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the first call in this process (a monotonic clock shared by threads).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A latency histogram in microseconds, from 1 µs to 10 minutes, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are valid constants, so this cannot fail; fall back to auto-resize anyway.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| {
        let mut h = Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"));
        h.auto(true);
        h
    })
}

/// Records `value_us` (clamped into the histogram's range).
pub fn record(histogram: &mut Histogram<u64>, value_us: u64) {
    histogram.saturating_record(value_us.max(1));
}

/// The `q` quantile of `histogram` in milliseconds (0 when empty).
pub fn quantile_ms(histogram: &Histogram<u64>, q: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `p50,p99,p999` in milliseconds, for a CSV row.
pub fn p50_p99_p999_csv(histogram: &Histogram<u64>) -> String {
    let [p50, p99, p999] = [0.5, 0.99, 0.999].map(|q| quantile_ms(histogram, q));
    format!("{p50:.3},{p99:.3},{p999:.3}")
}

/// `p50 a ms, p99 b ms, p999 c ms, max d ms` for a histogram in microseconds.
pub fn summary(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
        quantile_ms(histogram, 0.5),
        quantile_ms(histogram, 0.99),
        quantile_ms(histogram, 0.999),
        histogram.max() as f64 / 1000.0
    )
}

/// Clock ticks per second of /proc/PID/stat times, from `getconf CLK_TCK` (100 if that fails).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) used so far by process `pid` ("self" for this process).
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat =
        fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name may contain spaces; fields after its closing parenthesis are fixed.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3 of the full line; utime is 14 and stime 15, so 11 and 12 here.
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

/// Resident set size of process `pid` in bytes (VmRSS).
pub fn rss_bytes(pid: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
    let kib: u64 = line.split_whitespace().nth(1).context("malformed VmRSS")?.parse()?;
    Ok(kib * 1024)
}

/// Kills the servers (those whose pids are known) and says so, before a scenario closes
/// its thousands of connections: that close is not what is measured.
pub fn kill_before_closing(server_pids: &[u32]) -> anyhow::Result<()> {
    for &pid in server_pids {
        let died = kill_and_wait(pid, Duration::from_secs(10))?;
        println!(
            "server {pid} killed before closing the connections{}",
            if died { "" } else { " (still alive after 10 s)" }
        );
    }
    Ok(())
}

/// `pids` without repeats, in their order (a pid given twice is one process, counted once).
fn unique(pids: &[u32]) -> Vec<u32> {
    let mut seen = Vec::with_capacity(pids.len());
    for &pid in pids {
        if !seen.contains(&pid) {
            seen.push(pid);
        }
    }
    seen
}

/// The summed RSS of processes `pids` in bytes (an error if one cannot be read).
pub fn rss_total(pids: &[u32]) -> anyhow::Result<u64> {
    unique(pids).iter().map(|pid| rss_bytes(&pid.to_string())).sum()
}

/// The servers' RSS for a report line: `12.3 MiB` for one pid; for several, their sum
/// and each pid's share, `24.6 MiB (pid 11 12.3 MiB + pid 12 12.3 MiB)`. None when no
/// pid was given or none can be read (a pid that cannot be read counts 0 and shows `?`).
pub fn rss_report(pids: &[u32]) -> Option<String> {
    let readings: Vec<(u32, Option<u64>)> =
        unique(pids).into_iter().map(|p| (p, rss_bytes(&p.to_string()).ok())).collect();
    if readings.iter().all(|(_, r)| r.is_none()) {
        return None;
    }
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    let total: u64 = readings.iter().filter_map(|(_, r)| *r).sum();
    if readings.len() == 1 {
        return Some(mib(total));
    }
    let parts: Vec<String> =
        readings.iter().map(|(p, r)| format!("pid {p} {}", r.map_or_else(|| "?".to_owned(), mib))).collect();
    Some(format!("{} ({})", mib(total), parts.join(" + ")))
}

/// Sends SIGKILL to process `pid` and waits (up to `timeout`) until it is gone or a
/// zombie; true when it died in time. Used to stop a server before closing thousands
/// of connections at once, when that close is not what is being measured.
pub fn kill_and_wait(pid: u32, timeout: Duration) -> anyhow::Result<bool> {
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL)
        .with_context(|| format!("cannot kill process {pid}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
        });
        match state.as_deref() {
            None | Some("Z") | Some("X") => return Ok(true),
            Some(_) if Instant::now() >= deadline => return Ok(false),
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Before/after CPU readings of the servers (those whose pids are known) and of this process.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    /// Each server's pid and CPU seconds at the start (None: unreadable).
    server_start: Vec<(u32, Option<f64>)>,
    own_start: f64,
    started: Instant,
}

/// CPU seconds used during a [`CpuMeter`]'s span.
#[derive(Debug, Clone, Default)]
pub struct CpuUsage {
    /// The servers' CPU seconds, summed over every pid given (None when no pid was
    /// given or one of them could not be read).
    pub server: Option<f64>,
    /// Each server's share of `server`, by pid (empty when `server` is None).
    pub per_server: Vec<(u32, f64)>,
    /// This process's CPU seconds.
    pub own: f64,
    /// Wall-clock seconds.
    pub wall: f64,
}

impl CpuMeter {
    /// Starts measuring now; `server_pids` may be empty (no server figures) or name
    /// several processes (the nodes of a cluster), whose CPU is summed.
    pub fn start(server_pids: &[u32]) -> Self {
        let server_start = unique(server_pids).into_iter().map(|p| (p, cpu_seconds(&p.to_string()).ok())).collect();
        Self { server_start, own_start: cpu_seconds("self").unwrap_or(0.0), started: Instant::now() }
    }

    /// CPU used since [`CpuMeter::start`].
    pub fn stop(&self) -> CpuUsage {
        let per_server: Option<Vec<(u32, f64)>> = self
            .server_start
            .iter()
            .map(|&(pid, start)| {
                let end = cpu_seconds(&pid.to_string()).ok()?;
                Some((pid, end - start?))
            })
            .collect();
        let per_server = per_server.filter(|p| !p.is_empty()).unwrap_or_default();
        let server = (!per_server.is_empty()).then(|| per_server.iter().map(|(_, s)| s).sum());
        let own = cpu_seconds("self").unwrap_or(0.0) - self.own_start;
        CpuUsage { server, per_server, own, wall: self.started.elapsed().as_secs_f64() }
    }
}

impl CpuUsage {
    /// `server X CPU-s per M deliveries, bench Y` for `events` deliveries (or other events).
    /// With several server pids, X is their sum, followed by each pid's share.
    pub fn per_million(&self, events: u64, what: &str) -> String {
        let m = (events as f64 / 1e6).max(1e-9);
        let wall = self.wall.max(1e-9);
        let server = match self.server {
            Some(s) if self.per_server.len() > 1 => {
                let parts: Vec<String> = self
                    .per_server
                    .iter()
                    .map(|(pid, c)| format!("pid {pid} {:.3} ({:.0}%)", c / m, 100.0 * c / wall))
                    .collect();
                format!(
                    "server {:.3} CPU-s/M {what} ({:.0}% of a core, {} servers: {})",
                    s / m,
                    100.0 * s / wall,
                    self.per_server.len(),
                    parts.join(" + ")
                )
            }
            Some(s) => format!("server {:.3} CPU-s/M {what} ({:.0}% of a core)", s / m, 100.0 * s / wall),
            None => "server CPU unknown (no --server-pid)".into(),
        };
        format!("{server}, bench {:.3} CPU-s/M {what} ({:.0}% of a core)", self.own / m, 100.0 * self.own / wall)
    }
}

/// Appends `row` to the CSV file `path`, writing `header` first when the file is new or empty.
pub fn append_csv(path: &Path, header: &str, row: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if file.metadata()?.len() == 0 {
        writeln!(file, "{header}")?;
    }
    writeln!(file, "{row}")?;
    Ok(())
}

/// Sleeps until `deadline_us` on the [`now_us`] clock.
pub async fn sleep_until_us(deadline_us: u64) {
    let now = now_us();
    if deadline_us > now {
        tokio::time::sleep(Duration::from_micros(deadline_us - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_rss() {
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(rss_bytes("self").unwrap() > 0);
    }

    #[test]
    fn several_pids_are_summed_once_each() {
        assert_eq!(unique(&[3, 1, 3, 2, 1]), vec![3, 1, 2]);
        let me = std::process::id();
        // This process's RSS moves while the other tests run: a pid given twice is
        // counted once when the total stays well below twice one reading.
        let one = rss_total(&[me]).unwrap();
        assert!(rss_total(&[me, me]).unwrap() < one + one / 2, "a pid given twice was counted twice");
        assert!(rss_report(&[me]).unwrap().ends_with(" MiB"));
        assert!(rss_report(&[]).is_none());
        let usage = CpuMeter::start(&[me, me]).stop();
        assert_eq!(usage.per_server.len(), 1);
        assert!(usage.server.is_some());
        assert!(CpuMeter::start(&[]).stop().server.is_none());
    }

    #[test]
    fn quantiles_in_ms() {
        let mut h = latency_histogram();
        for v in 1..=1000 {
            record(&mut h, v * 10);
        }
        assert!((quantile_ms(&h, 0.5) - 5.0).abs() < 0.05);
        assert!(summary(&h).contains("p99"));
    }
}
