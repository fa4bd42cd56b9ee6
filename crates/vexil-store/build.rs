//! Rebuilds the crate when a migration is added or edited: `sqlx::migrate!` embeds the files at
//! compile time, and stable Rust cannot track them from inside the macro.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
