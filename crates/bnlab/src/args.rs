//! The command-line tree; the `///` docs are the help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// bnlab: the BatchNorm laboratory.
#[derive(Debug, Parser)]
#[command(name = "bnlab", version, about)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// bnlab's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find, download and prepare datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// List the registered networks.
    Models,
}

/// `bnlab data …`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Show every known dataset and where it was found, or where bnlab looked.
    List,
    /// Download a dataset from its canonical address and verify its checksums (needs internet).
    Fetch {
        /// cifar10, cifar100, svhn, mnist or fashion-mnist.
        name: String,
        /// Data root to download into (default: $BNLAB_DATA, else ./data).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Write the class-balanced subset of Fashion-MNIST that bnlab bundles.
    Subset {
        /// Images per class from the training set.
        #[arg(long, default_value_t = 600)]
        train: usize,
        /// Images per class from the test set.
        #[arg(long, default_value_t = 100)]
        test: usize,
        /// Output folder.
        #[arg(long, default_value = "data/fashion-mnist-subset")]
        out: PathBuf,
    },
}
