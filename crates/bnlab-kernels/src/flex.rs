//! Flex tensor helpers: whether a device is Flex, and the values of a Flex tensor.

use std::borrow::Cow;

use burn::backend::DispatchDevice;
use burn::backend::flex::FlexTensor;
use burn::tensor::{Device, TensorData};

/// The f32 values of a Flex tensor in row-major order, borrowed when already contiguous.
///
/// # Panics
/// When the values cannot be converted to f32 (a float tensor always can). Kernels call this
/// inside backend operations, which cannot return an error.
pub fn f32_values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => Cow::Borrowed(v),
        None => Cow::Owned(
            t.clone()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_else(|e| panic!("bnlab-kernels: a Flex tensor as f32: {e:?}")),
        ),
    }
}

/// A Flex tensor of `shape` holding `values` in row-major order.
pub fn flex_tensor<E: burn::tensor::Element>(values: Vec<E>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Whether `device` is Flex, with or without autodiff: where bnlab's CPU kernels (the fused
/// normalization, the convolutions) run.
pub fn is_flex(device: &Device) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}
