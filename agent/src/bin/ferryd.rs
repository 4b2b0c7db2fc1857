//! `ferryd --config FILE`: the Ferry agent.

fn main() {
    eprintln!("ferryd: not built yet");
    std::process::exit(1);
}
