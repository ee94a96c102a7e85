//! `kaskade-raw-forwarder`: the minimal forwarder kaskade's forwarding rate is compared with
//! (see `kaskade_loadtest::raw` and docs/BENCHMARKS.md, "The raw limit").
//!
//! ```text
//! kaskade-raw-forwarder --listen 127.0.0.1:10100 --secret S
//! ```

fn main() -> anyhow::Result<()> {
    kaskade_loadtest::raw::shell::main()
}
