//! `kaskade-loadtest`: the load generator (for now only prints usage).

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    println!(
        "kaskade-loadtest {version}\n\n\
         Synthetic kaskade participants (H.264 + Opus over WebRTC).\n\n\
         Usage: kaskade-loadtest [--help | --version]\n\n\
         The load generator is not implemented yet; use the `kaskade_loadtest` library\n\
         (Participant::join, LossyRelay::start) from tests."
    );
}
