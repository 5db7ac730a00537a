//! Where statistics come from: the layer's mode and inference source, the running statistics
//! kept in training, and PreciseBN's population statistics.

mod mode;
pub(crate) mod moments;
pub(crate) mod population;
mod running;
pub(crate) mod weighing;

pub use mode::*;
pub use population::PopulationEstimator;
pub use running::*;
