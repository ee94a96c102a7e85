//! The report as a two-column table (what `kaskade-loadtest` prints).

use std::fmt;

use super::{ProcessUsage, Report};

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.1} ms"))
}

impl fmt::Display for Report {
    /// The report as a two-column table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows = self.media_rows();
        rows.extend(self.churn_row());
        rows.extend(self.server_rows());
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in rows {
            writeln!(f, "{key:<width$}  {value}")?;
        }
        Ok(())
    }
}

impl Report {
    /// The load, and what the participants saw: joins, first frames, latency, loss, frames.
    fn media_rows(&self) -> Vec<(&'static str, String)> {
        let p = &self.params;
        vec![
            (
                "load",
                format!(
                    "{} rooms x {} participants, {}x{} @ {} fps, {} kbit/s, {:.1} s window",
                    p.rooms,
                    p.participants_per_room,
                    p.width,
                    p.height,
                    p.fps,
                    p.video_bitrate_kbps,
                    self.window_s
                ),
            ),
            (
                "joined",
                format!("{}/{}", self.participants_joined, self.participants_total),
            ),
            (
                "join time p50/p99",
                format!("{} / {}", ms(self.join_ms.p50), ms(self.join_ms.p99)),
            ),
            (
                "first frame p50/p99",
                format!(
                    "{} / {} ({} pairs without a frame)",
                    ms(self.first_frame_ms.p50),
                    ms(self.first_frame_ms.p99),
                    self.missing_first_frames
                ),
            ),
            (
                "latency p50/p99/max",
                format!(
                    "{} / {} / {} ({} stamps)",
                    ms(self.latency.p50_ms),
                    ms(self.latency.p99_ms),
                    ms(self.latency.max_ms),
                    self.latency.samples
                ),
            ),
            (
                "packet loss",
                format!(
                    "{:.3} % ({} of {})",
                    self.loss.percent, self.loss.lost, self.loss.expected
                ),
            ),
            (
                "NACKs / PLIs sent",
                format!("{} / {}", self.nacks_sent, self.plis_sent),
            ),
            ("freezes (> 500 ms)", self.freezes.to_string()),
            (
                "frames received / decoded",
                format!(
                    "{} / {} ({} errors)",
                    self.frames_received, self.frames_decoded, self.decode_errors
                ),
            ),
            (
                "bytes received/expected",
                format!(
                    "{} / {} ({})",
                    self.bytes.received,
                    self.bytes.expected,
                    self.bytes
                        .ratio
                        .map_or_else(|| "-".into(), |r| format!("{:.2} %", r * 100.0))
                ),
            ),
        ]
    }

    /// Who left and joined during the window, when participants churned.
    fn churn_row(&self) -> Option<(&'static str, String)> {
        let churn = self.churn.as_ref()?;
        Some((
            "churn",
            format!(
                "every {:.1} s: {} left, {} joined ({} failed, {} retries, {} skipped), \
                 settled p50/p99 {} / {} ({} unsettled)",
                churn.every_s,
                churn.leaves,
                churn.joins,
                churn.join_failures,
                churn.join_retries,
                churn.skipped,
                ms(churn.settle_ms.p50),
                ms(churn.settle_ms.p99),
                churn.unsettled,
            ),
        ))
    }

    /// What forwarding cost: packets, CPU per packet, memory, and each process's usage.
    fn server_rows(&self) -> Vec<(&'static str, String)> {
        let fw = &self.forwarding;
        let figure = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
        };
        let mut rows = vec![
            (
                "forwarded",
                format!(
                    "{:.0} packets/s; CPU us per packet: server {}, generator {}; {} packets per \
                     server CPU-s",
                    fw.packets_per_second,
                    figure(fw.server_cpu_us_per_packet, 2),
                    figure(fw.generator_cpu_us_per_packet, 2),
                    figure(fw.packets_per_server_cpu_second, 0),
                ),
            ),
            (
                "server memory",
                format!(
                    "{} KiB per participant",
                    figure(fw.server_bytes_per_participant.map(|b| b / 1024.0), 0)
                ),
            ),
        ];
        let usage = |u: &ProcessUsage| {
            let rss = u.peak_rss_bytes.map_or_else(
                || "-".into(),
                |b| format!("{:.1} MiB", b as f64 / 1048576.0),
            );
            format!("{:.2} CPU s, peak RSS {rss}", u.cpu_seconds)
        };
        if let Some(server) = &self.server {
            rows.push(("server", usage(server)));
        }
        rows.push(("generator", usage(&self.generator)));
        rows
    }
}
