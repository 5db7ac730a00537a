//! `bnlab data list | fetch | subset`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bnlab_data::{DatasetId, Part, class_balanced_subset, fetch, list, write_idx_set};

use crate::args::DataCommand;

/// Runs a `data` subcommand.
pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::List => {
            for status in list() {
                match &status.found {
                    Some(dir) => println!("{:<22} found    {}", status.id.name(), dir.display()),
                    None => {
                        let looked: Vec<String> = status
                            .looked
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect();
                        println!(
                            "{:<22} missing  looked in {}",
                            status.id.name(),
                            looked.join(", ")
                        );
                        println!("{:<22}          {}", "", status.id.hint());
                    }
                }
            }
            Ok(())
        }
        DataCommand::Fetch { name, root } => {
            let id = DatasetId::from_name(&name)?;
            let root = root
                .or_else(|| std::env::var_os("BNLAB_DATA").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("data"));
            let dir = fetch(id, &root).with_context(|| format!("fetching {name}"))?;
            println!("{name}: verified and stored in {}", dir.display());
            Ok(())
        }
        DataCommand::Subset { train, test, out } => {
            let id = DatasetId::FashionMnist;
            let dir = id.locate()?;
            for (part, prefix, per_class) in
                [(Part::Train, "train", train), (Part::Test, "t10k", test)]
            {
                let set = id.load_from(&dir, part)?;
                let subset = class_balanced_subset(&set, per_class)?;
                write_idx_set(&out, prefix, &subset)?;
                println!(
                    "{prefix}: {} images ({per_class} per class) from {}",
                    subset.labels.len(),
                    dir.display()
                );
            }
            Ok(())
        }
    }
}
