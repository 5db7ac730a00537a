//! `bnlab models`: the network registry.

use anyhow::Result;

/// Prints every registered network with what it is.
pub fn run() -> Result<()> {
    for bnlab_models::ModelEntry { name, what, .. } in bnlab_models::MODELS {
        println!("{name:<24} {what}");
    }
    Ok(())
}
