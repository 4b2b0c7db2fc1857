//! `ferry-stub`: what a migrated process becomes on its origin host.

fn main() {
    eprintln!("ferry-stub: not built yet");
    std::process::exit(1);
}
