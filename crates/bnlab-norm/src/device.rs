//! Devices by name, as specs and `--device` write them: `flex`, `vulkan[:N]`, `vulkan-cpu`
//! and `cuda[:N]`, each checked against the build's features and the machine before the
//! first tensor, so a missing GPU or a CPU-only build is an error that says what to do.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::NormError;

/// A device by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceName {
    /// Flex, Burn's pure-Rust CPU backend (the default).
    #[default]
    Flex,
    /// The N-th discrete GPU through Vulkan (`vulkan` is `vulkan:0`).
    Vulkan(usize),
    /// Vulkan's CPU device (Mesa's lavapipe): the GPU code path on a machine without a GPU.
    VulkanCpu,
    /// The N-th CUDA device (`cuda` is `cuda:0`).
    Cuda(usize),
}

/// The names `DeviceName` parses, for error messages and `--help`.
pub const DEVICE_NAMES: &str = "flex, vulkan[:N], vulkan-cpu or cuda[:N]";

impl DeviceName {
    /// What kind of device this is, without its index: `flex`, `vulkan`, `vulkan-cpu` or
    /// `cuda`. Results of one kind are comparable; the index only says which card.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceName::Flex => "flex",
            DeviceName::Vulkan(_) => "vulkan",
            DeviceName::VulkanCpu => "vulkan-cpu",
            DeviceName::Cuda(_) => "cuda",
        }
    }

    /// Whether this is the default device (Flex).
    pub fn is_default(&self) -> bool {
        *self == DeviceName::Flex
    }

    /// The Cargo feature a build needs for this device (none for Flex).
    pub fn feature(&self) -> Option<&'static str> {
        match self {
            DeviceName::Flex => None,
            DeviceName::Vulkan(_) | DeviceName::VulkanCpu => Some("vulkan"),
            DeviceName::Cuda(_) => Some("cuda"),
        }
    }

    /// The device, after asking the machine that it is there: an error names a device this
    /// build lacks (with the feature to build with) or that the machine does not have.
    pub fn device(&self) -> Result<Device, NormError> {
        match self {
            DeviceName::Flex => Ok(Device::flex()),
            DeviceName::Vulkan(i) => vulkan(*self, burn::tensor::DeviceKind::DiscreteGpu(*i)),
            DeviceName::VulkanCpu => vulkan(*self, burn::tensor::DeviceKind::Cpu),
            DeviceName::Cuda(i) => cuda(*self, *i),
        }
    }
}

/// The error for a device this build was compiled without.
#[allow(dead_code)] // unused in a build with every feature
fn not_built(name: DeviceName) -> NormError {
    let feature = name.feature().unwrap_or("none");
    NormError::NotBuilt {
        device: name.to_string(),
        feature,
    }
}

/// A Vulkan device of `kind`, asked of the machine first (so a missing GPU is an error
/// instead of a panic on the first tensor).
#[cfg(feature = "vulkan")]
fn vulkan(name: DeviceName, kind: burn::tensor::DeviceKind) -> Result<Device, NormError> {
    use cubecl::device::WgpuDeviceKind;
    let probe = match &kind {
        burn::tensor::DeviceKind::DiscreteGpu(i) => WgpuDeviceKind::DiscreteGpu(*i),
        _ => WgpuDeviceKind::Cpu,
    };
    cubecl::Device::vulkan(probe).map_err(|e| NormError::NoDevice {
        what: format!("{name} ({})", name.describe()),
        source: crate::ReadError(e.to_string()),
    })?;
    Ok(Device::vulkan(kind))
}

/// Without the `vulkan` feature: the error that says how to build it.
#[cfg(not(feature = "vulkan"))]
fn vulkan(name: DeviceName, _: burn::tensor::DeviceKind) -> Result<Device, NormError> {
    Err(not_built(name))
}

/// The CUDA device `index`, asked of the machine first.
#[cfg(feature = "cuda")]
fn cuda(name: DeviceName, index: usize) -> Result<Device, NormError> {
    cubecl::Device::cuda(index).map_err(|e| NormError::NoDevice {
        what: format!("{name} (a CUDA GPU)"),
        source: crate::ReadError(e.to_string()),
    })?;
    Ok(Device::cuda(index))
}

/// Without the `cuda` feature: the error that says how to build it.
#[cfg(not(feature = "cuda"))]
fn cuda(name: DeviceName, _: usize) -> Result<Device, NormError> {
    Err(not_built(name))
}

#[cfg(feature = "vulkan")]
impl DeviceName {
    /// The device in words.
    fn describe(&self) -> &'static str {
        match self {
            DeviceName::Flex => "the CPU through Flex",
            DeviceName::Vulkan(_) => "a discrete GPU through Vulkan",
            DeviceName::VulkanCpu => "Vulkan's CPU device, e.g. Mesa's lavapipe",
            DeviceName::Cuda(_) => "a CUDA GPU",
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceName::Vulkan(i) | DeviceName::Cuda(i) if *i > 0 => {
                write!(f, "{}:{i}", self.kind())
            }
            _ => f.write_str(self.kind()),
        }
    }
}

impl FromStr for DeviceName {
    type Err = NormError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NormError::UnknownDevice(s.to_string());
        let (kind, index) = match s.split_once(':') {
            Some((kind, i)) => (kind, Some(i.parse::<usize>().map_err(|_| bad())?)),
            None => (s, None),
        };
        match (kind, index) {
            ("flex", None) => Ok(DeviceName::Flex),
            ("vulkan-cpu", None) => Ok(DeviceName::VulkanCpu),
            ("vulkan", i) => Ok(DeviceName::Vulkan(i.unwrap_or(0))),
            ("cuda", i) => Ok(DeviceName::Cuda(i.unwrap_or(0))),
            _ => Err(bad()),
        }
    }
}

impl Serialize for DeviceName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (text, name, shown) in [
            ("flex", DeviceName::Flex, "flex"),
            ("vulkan", DeviceName::Vulkan(0), "vulkan"),
            ("vulkan:0", DeviceName::Vulkan(0), "vulkan"),
            ("vulkan:2", DeviceName::Vulkan(2), "vulkan:2"),
            ("vulkan-cpu", DeviceName::VulkanCpu, "vulkan-cpu"),
            ("cuda:1", DeviceName::Cuda(1), "cuda:1"),
        ] {
            assert_eq!(text.parse::<DeviceName>().unwrap(), name, "{text}");
            assert_eq!(name.to_string(), shown);
        }
    }

    #[test]
    fn bad_names_are_errors_that_list_the_good_ones() {
        for text in [
            "",
            "gpu",
            "vulkan:",
            "vulkan:x",
            "flex:1",
            "vulkan-cpu:0",
            "cuda:-1",
        ] {
            let e = text.parse::<DeviceName>().unwrap_err();
            assert!(matches!(e, NormError::UnknownDevice(_)), "{text}: {e}");
            assert!(e.to_string().contains(DEVICE_NAMES), "{e}");
        }
    }

    #[test]
    fn kind_drops_the_index() {
        assert_eq!(DeviceName::Vulkan(3).kind(), DeviceName::Vulkan(0).kind());
        assert_ne!(DeviceName::VulkanCpu.kind(), DeviceName::Vulkan(0).kind());
    }

    #[test]
    fn serde_uses_the_names() {
        let json = serde_json::to_string(&DeviceName::Cuda(1)).unwrap();
        assert_eq!(json, "\"cuda:1\"");
        let back: DeviceName = serde_json::from_str("\"vulkan-cpu\"").unwrap();
        assert_eq!(back, DeviceName::VulkanCpu);
        assert!(serde_json::from_str::<DeviceName>("\"tpu\"").is_err());
    }

    #[cfg(not(feature = "vulkan"))]
    #[test]
    fn a_build_without_vulkan_says_how_to_get_it() {
        let e = DeviceName::Vulkan(0).device().unwrap_err();
        assert!(e.to_string().contains("--features vulkan"), "{e}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_build_without_cuda_says_how_to_get_it() {
        let e = DeviceName::Cuda(0).device().unwrap_err();
        assert!(e.to_string().contains("--features cuda"), "{e}");
    }

    #[test]
    fn flex_is_always_there() {
        assert!(DeviceName::Flex.device().is_ok());
    }
}
