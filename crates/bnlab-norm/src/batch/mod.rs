//! What "the batch" is: the statistic unit, ghost batches and domains, the plan of one forward
//! pass (the one batch-split rule, [`check_batch`]), and how workers combine statistics.

mod plan;
mod policy;
mod reducer;
mod sync;
mod unit;

pub use plan::check_batch;
pub(crate) use plan::{Partition, plan};
pub use policy::*;
pub use reducer::*;
pub use sync::*;
pub use unit::*;
