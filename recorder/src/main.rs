//! `kaskade-recorder`: records meetings into playable files. Its issue is still open; until
//! then this binary only says so.

fn main() {
    eprintln!("kaskade-recorder is not built yet (see README.md)");
    std::process::exit(2);
}
