//! Which kernels a Vulkan driver runs: one operation per call, so that a driver crash names
//! the first operation it cannot compile. `./vulkan-test.sh` (and BENCHMARKS.md) use it to
//! tell a fault in the driver from one in the SPIR-V that CubeCL emits.
//!
//! `cargo run --release -p bnlab-norm --features vulkan --example vulkan_probe -- DEVICE OP`
//! with DEVICE a device name (`vulkan-cpu`, `vulkan`) and OP one of [`OPS`]; `list` prints
//! the operations. Exit status 0: the operation ran and gave the expected value; 3: the
//! device says it lacks the operation's dtype.

use bnlab_norm::{DeviceName, Kernel, NormConfig};
use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};

/// The operations, from the simplest kernel up to the layer's own.
const OPS: [&str; 16] = [
    "upload-read",
    "add",
    "mul-scalar",
    "sum",
    "sum-dim",
    "matmul",
    "sqrt",
    "cast-f64",
    "cast-f16",
    "cast-bf16",
    "random-uniform",
    "random-normal",
    "select",
    "norm-composed",
    "norm-fused",
    "norm-fused-backward",
];

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("floats")
}

/// `[0, 1, …, n − 1]` of `shape` on `device`.
fn ramp<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Runs `op` on `device`: whether it gave the expected value.
fn run(op: &str, device: &Device) -> bool {
    let x = || ramp([4, 8], device);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
    match op {
        "upload-read" => values(x())[31] == 31.0,
        "add" => values(x() + x())[31] == 62.0,
        "mul-scalar" => values(x().mul_scalar(0.5))[31] == 15.5,
        "sum" => values(x().sum())[0] == 496.0,
        "sum-dim" => values(x().sum_dim(1))[3] == (24..32).sum::<i32>() as f64,
        "matmul" => {
            let y = x().matmul(x().transpose());
            close(values(y)[0], (0..8).map(|i| (i * i) as f64).sum())
        }
        "sqrt" => close(values(x().sqrt())[16], 4.0),
        "cast-f64" => {
            let y = x().cast(DType::F64).sum();
            close(values(y)[0], 496.0)
        }
        "cast-f16" | "cast-bf16" => {
            let half = if op == "cast-f16" {
                DType::F16
            } else {
                DType::BF16
            };
            // small integers are exact in both formats
            values(x().cast(half).cast(DType::F32))[31] == 31.0
        }
        "random-uniform" => {
            let y = Tensor::<2>::random([64, 64], Distribution::Uniform(0.0, 1.0), device);
            let m = values(y.mean())[0];
            (0.4..0.6).contains(&m)
        }
        "random-normal" => {
            let y = Tensor::<2>::random([64, 64], Distribution::Normal(0.0, 1.0), device);
            values(y.mean())[0].abs() < 0.1
        }
        "select" => {
            let idx = Tensor::<1, burn::tensor::Int>::from_data(
                TensorData::new(vec![3i64, 0], [2]),
                device,
            );
            values(x().select(0, idx))[0] == 24.0
        }
        "norm-composed" | "norm-fused" | "norm-fused-backward" => {
            let kernel = if op == "norm-composed" {
                Kernel::Composed
            } else {
                Kernel::Fused
            };
            let backward = op == "norm-fused-backward";
            let dev = if backward {
                device.clone().autodiff()
            } else {
                device.clone()
            };
            let norm = NormConfig::new(4)
                .with_kernel(kernel)
                .init(&dev)
                .expect("config");
            let x = ramp([2, 4, 3], &dev);
            let x = if backward { x.require_grad() } else { x };
            let y = norm.forward(x).expect("forward");
            if backward {
                // ∂Σy²/∂γ = 2·Σx̂² = 2 × 6 values per channel (γ = 1, β = 0; ε negligible)
                let g = (y.clone() * y.clone()).sum().backward();
                let gamma = norm.affine.gamma.as_ref().expect("γ");
                return match gamma.val().grad(&g) {
                    Some(grad) => values(grad).iter().all(|&v| close(v, 12.0)),
                    None => false,
                };
            }
            // each channel's x̂ has mean 0
            let v = values(y.sum_dim(2).sum_dim(0));
            v.iter().all(|m| m.abs() < 1e-3)
        }
        _ => {
            eprintln!("unknown operation `{op}`: one of {OPS:?}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("list") {
        println!("{}", OPS.join("\n"));
        return;
    }
    let (Some(name), Some(op)) = (args.first(), args.get(1)) else {
        eprintln!("usage: vulkan_probe DEVICE OP | list");
        std::process::exit(2);
    };
    let device = match name.parse::<DeviceName>().and_then(|d| d.device()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    // a format the device says it lacks is not a fault (lavapipe has no bf16): exit 3
    let needs = match op.as_str() {
        "cast-f16" => Some(DType::F16),
        "cast-bf16" => Some(DType::BF16),
        _ => None,
    };
    if let Some(dtype) = needs.filter(|d| !device.supports_dtype(*d)) {
        println!("{op}: the device has no {dtype:?}");
        std::process::exit(3);
    }
    let ok = run(op, &device);
    println!("{op}: {}", if ok { "ok" } else { "wrong value" });
    std::process::exit(if ok { 0 } else { 1 });
}
