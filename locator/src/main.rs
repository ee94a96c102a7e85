//! `kaskade-locator`: places meetings on SFU nodes and cascades them. Its issue is still open;
//! until then this binary only says so, and `kaskade-sfu` serves meetings on its own.

fn main() {
    eprintln!("kaskade-locator is not built yet: run `kaskade-sfu` (see README.md)");
    std::process::exit(2);
}
