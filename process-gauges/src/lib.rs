//! `kaskade_process_gauges`: gauges of the process itself, for soak runs and leak hunting: open
//! file descriptors, resident memory, the heap's bytes in use and alive tokio tasks. They are
//! sampled when `/metrics` is rendered (a directory listing of `/proc/self/fd`, one read of
//! `/proc/self/status`, one `mallinfo2` of glibc's allocator and a counter read of the runtime),
//! never on the media path. The node and the locator register the same four.
//!
//! Resident memory alone cannot tell a leak from an allocator that keeps freed memory: the heap
//! in use is what the program holds, so a leak grows it while fragmentation grows only RSS.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `*_process_open_fds`, `*_process_resident_memory_bytes`, `*_process_heap_in_use_bytes` and
/// `*_tokio_alive_tasks` of one registry (named under the registry's prefix).
#[derive(Debug, Clone, Default)]
pub struct ProcessGauges {
    open_fds: Gauge,
    resident_bytes: Gauge,
    heap_in_use_bytes: Gauge,
    alive_tasks: Gauge,
}

/// One reading of the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessSample {
    /// Open file descriptors (sockets included), without the one used to count them.
    pub open_fds: Option<u64>,
    /// Resident set size (`VmRSS`), bytes.
    pub resident_bytes: Option<u64>,
    /// Bytes the program holds allocated on the heap (glibc's allocator: chunks in use in every
    /// arena plus mmapped chunks); none with another C library.
    pub heap_in_use_bytes: Option<u64>,
    /// Tasks alive on the current tokio runtime (none outside a runtime).
    pub alive_tasks: Option<u64>,
}

impl ProcessGauges {
    /// Registers the four gauges in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors of the process (sampled when scraped)",
            gauges.open_fds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process, VmRSS (sampled when scraped)",
            gauges.resident_bytes.clone(),
        );
        registry.register(
            "process_heap_in_use_bytes",
            "Heap bytes the process holds allocated, glibc mallinfo2 uordblks + hblkhd (sampled when scraped)",
            gauges.heap_in_use_bytes.clone(),
        );
        registry.register(
            "tokio_alive_tasks",
            "Tasks alive on the tokio runtime (sampled when scraped)",
            gauges.alive_tasks.clone(),
        );
        gauges
    }

    /// Reads the process and sets the gauges (a value that cannot be read keeps its last one).
    pub fn sample(&self) {
        let sample = ProcessSample::read();
        let set = |gauge: &Gauge, value: Option<u64>| {
            if let Some(value) = value {
                gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        };
        set(&self.open_fds, sample.open_fds);
        set(&self.resident_bytes, sample.resident_bytes);
        set(&self.heap_in_use_bytes, sample.heap_in_use_bytes);
        set(&self.alive_tasks, sample.alive_tasks);
    }
}

impl ProcessSample {
    /// Reads this process now.
    pub fn read() -> Self {
        Self {
            open_fds: open_fds(),
            resident_bytes: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|status| vm_rss_bytes(&status)),
            heap_in_use_bytes: heap_in_use_bytes(),
            alive_tasks: tokio::runtime::Handle::try_current()
                .ok()
                .map(|handle| handle.metrics().num_alive_tasks() as u64),
        }
    }
}

/// Entries of `/proc/self/fd`, less the descriptor of the listing itself.
fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(entries.saturating_sub(1))
}

/// Bytes allocated and not freed, over every arena of glibc's malloc (small chunks in use and
/// chunks of their own mapping).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use_bytes() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value; it takes each
    // arena's lock while it sums.
    let info = unsafe { libc::mallinfo2() };
    Some((info.uordblks + info.hblkhd) as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use_bytes() -> Option<u64> {
    None
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn reads_rss_from_status_text() {
        let status = "Name:\tkaskade\nVmHWM:\t  9000 kB\nVmRSS:\t  4321 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_bytes(status), Some(4321 * 1024));
        assert_eq!(vm_rss_bytes("Name: x\n"), None);
    }

    #[tokio::test]
    async fn samples_this_process() {
        // other tests of this binary open and close files meanwhile: only this test's
        // runtime is private, so only its task count is compared exactly
        let before = ProcessSample::read();
        let _file = std::fs::File::open("/proc/self/status").unwrap();
        let task = tokio::spawn(std::future::pending::<()>());
        let during = ProcessSample::read();
        assert!(during.resident_bytes.unwrap() > 0);
        assert!(during.open_fds.unwrap() > 0);
        assert_eq!(during.alive_tasks, before.alive_tasks.map(|n| n + 1));
        task.abort();
        // 64 MiB held (its own mapping) shows in the heap in use, and is gone once freed; other
        // tests allocate meanwhile, but far less than this
        let held = std::hint::black_box(vec![1u8; 64 << 20]);
        let holding = ProcessSample::read().heap_in_use_bytes.unwrap();
        drop(held);
        let freed = ProcessSample::read().heap_in_use_bytes.unwrap();
        assert!(holding >= 64 << 20, "{holding}");
        assert!(holding - freed >= 60 << 20, "{holding} then {freed}");

        let mut registry = Registry::with_prefix("kaskade_test");
        let gauges = ProcessGauges::register(&mut registry);
        gauges.sample();
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("kaskade_test_process_open_fds "), "{text}");
        assert!(text.contains("kaskade_test_process_resident_memory_bytes "));
        assert!(text.contains("kaskade_test_tokio_alive_tasks "));
        assert!(text.contains("kaskade_test_process_heap_in_use_bytes "));
        assert!(!text.contains("kaskade_test_process_heap_in_use_bytes 0\n"));
        assert!(!text.contains("kaskade_test_process_resident_memory_bytes 0\n"));
    }

    #[test]
    fn outside_a_runtime_there_are_no_tasks_to_count() {
        assert_eq!(ProcessSample::read().alive_tasks, None);
    }
}
