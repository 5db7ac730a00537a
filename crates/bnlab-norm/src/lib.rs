//! bnlab-norm: one normalization layer for Burn in which every batch, statistics and affine
//! choice of the BatchNorm literature is an explicit setting.
//!
//! - what the batch is: [`StatUnit`], [`BatchPolicy`] (ghost batches), [`DomainConfig`],
//!   [`StatsReducer`] (synced workers);
//! - where statistics come from: [`NormMode`], [`StatsSource`], [`RunningStats`],
//!   [`PopulationEstimator`];
//! - the affine tail: [`Affine`].

mod config;
mod error;
mod fold;
mod mode;
mod norm;
mod plan;
mod reducer;
mod roles;
mod state;

pub use config::*;
pub use error::*;

pub use mode::*;
pub use norm::*;
pub use reducer::*;
pub use roles::*;
pub use state::NormState;
