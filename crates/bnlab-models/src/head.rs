//! The classifier head shared by the networks, and the input check they all make.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, Tensor};

use crate::ModelError;
use crate::init::linear;

/// Global average pooling, dropout, then a fully connected layer.
///
/// Dropout is Burn's: active only on an autodiff device in training (`Module::train`); it
/// follows the last normalization layer, so it never touches batch statistics.
#[derive(Module, Debug)]
pub struct Classifier {
    /// Dropout before the fully connected layer (probability 0 disables it).
    pub dropout: Dropout,
    /// The fully connected layer (role `LinearWeight` / `Bias`).
    pub fc: Linear,
}

impl Classifier {
    /// A head from `features` pooled channels to `classes` logits.
    pub(crate) fn new(features: usize, classes: usize, dropout: f64, device: &Device) -> Self {
        Self {
            dropout: DropoutConfig::new(dropout).init(),
            fc: linear(features, classes, device),
        }
    }

    /// Logits of pooled features.
    ///
    /// # Shapes
    /// - input `[N, C, H, W]`, output `[N, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        self.fc.forward(self.dropout.forward(pooled))
    }
}

/// Checks an input batch: 4-D `[N, channels, H, W]` with N ≥ 1 and H, W ≥ `min_size`.
pub(crate) fn check_input(
    x: &Tensor<4>,
    channels: usize,
    min_size: usize,
) -> Result<(), ModelError> {
    let dims = x.dims();
    let bad = |why: String| {
        Err(ModelError::Shape {
            shape: dims.to_vec(),
            why,
        })
    };
    if dims[0] == 0 {
        return bad("the batch is empty".into());
    }
    if dims[1] != channels {
        return bad(format!("the network expects {channels} input channels"));
    }
    if dims[2] < min_size || dims[3] < min_size {
        return bad(format!(
            "the network needs inputs of at least {min_size}×{min_size}"
        ));
    }
    Ok(())
}

/// Validates a class count and an input channel count.
pub(crate) fn check_io(num_classes: usize, in_channels: usize) -> Result<(), ModelError> {
    if num_classes == 0 || in_channels == 0 {
        return Err(ModelError::InvalidConfig(format!(
            "num_classes ({num_classes}) and in_channels ({in_channels}) must be at least 1"
        )));
    }
    Ok(())
}
