//! [`FoldNorms`]: merging inference-mode normalization into the convolutions before it.

use crate::ModelError;

/// Folds every normalization layer that follows a convolution into that convolution.
///
/// Every such layer must be in `Eval(Population)` or `Frozen` mode with per-channel
/// statistics ([`bnlab_norm::Norm::fold_into_conv`]); otherwise the error names the first
/// layer that is not. The folded network computes the same outputs for inference; it is not
/// equivalent for fine-tuning (Wu & Johnson A.8). Input normalization is left in place.
pub trait FoldNorms: Sized {
    /// The network with its conv–norm pairs merged into biased convolutions.
    fn fold_norms(self) -> Result<Self, ModelError>;
}

impl<T: FoldNorms> FoldNorms for Option<T> {
    fn fold_norms(self) -> Result<Self, ModelError> {
        self.map(T::fold_norms).transpose()
    }
}

impl<T: FoldNorms> FoldNorms for Vec<T> {
    fn fold_norms(self) -> Result<Self, ModelError> {
        self.into_iter().map(T::fold_norms).collect()
    }
}

/// Implements [`FoldNorms`] for a struct by folding the listed fields and keeping the rest.
macro_rules! fold_fields {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        #[allow(clippy::needless_update)]
        impl $crate::FoldNorms for $ty {
            fn fold_norms(self) -> Result<Self, $crate::ModelError> {
                Ok(Self { $($field: $crate::FoldNorms::fold_norms(self.$field)?,)* ..self })
            }
        }
    };
}

pub(crate) use fold_fields;
