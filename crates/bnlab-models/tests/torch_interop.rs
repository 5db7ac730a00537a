//! PyTorch state dicts in and out, against fixtures PyTorch made
//! (`fixtures/make_torch_fixtures.py`): torchvision's key layouts, eval-mode logits of
//! imported models, bit-for-bit round trips, and errors that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bnlab_models::torch::{
    StateDict, export_state_dict, import_state_dict, read_state_dict, write_safetensors,
};
use bnlab_models::{ModelOptions, Network, build};
use bnlab_norm::{NormMode, set_norm_mode};
use burn::tensor::{Device, Tensor, TensorData};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn net(name: &str, classes: usize, width: f64) -> Network {
    let options = ModelOptions {
        width,
        ..ModelOptions::new(classes, 3)
    };
    build(name, &options, &Device::flex()).unwrap()
}

fn f32s(data: &TensorData) -> Vec<f32> {
    data.clone().convert::<f32>().try_into_vec::<f32>().unwrap()
}

#[test]
fn every_key_and_shape_is_torchvisions() {
    let text = std::fs::read_to_string(fixture("torch_keys.json")).unwrap();
    let torch: BTreeMap<String, Vec<(String, Vec<usize>)>> = serde_json::from_str(&text).unwrap();
    for (torch_name, ours) in [
        ("resnet18", "resnet18"),
        ("resnet34", "resnet34"),
        ("resnet50", "resnet50"),
        ("resnet101", "resnet101"),
        ("resnet152", "resnet152"),
        ("resnext50_32x4d", "resnext50-32x4d"),
        ("mobilenet_v2", "mobilenetv2"),
        ("inception_v3", "inception-v3"),
    ] {
        let exported = export_state_dict(&net(ours, 1000, 1.0)).unwrap();
        let got: BTreeMap<&str, Vec<usize>> = exported
            .iter()
            .map(|(k, v)| (k.as_str(), v.shape().to_vec()))
            .collect();
        let want: BTreeMap<&str, Vec<usize>> = torch[torch_name]
            .iter()
            .map(|(k, s)| (k.as_str(), s.clone()))
            .collect();
        assert_eq!(got.len(), want.len(), "{ours}: key count");
        for (k, shape) in &want {
            assert_eq!(got.get(k), Some(shape), "{ours}: `{k}`");
        }
    }
}

/// Imports `file` into `name` at `width` and checks its eval-mode logits on the fixture
/// input against PyTorch's.
fn logits_match(file: &str, name: &str, width: f64, io_key: &str) -> (Network, StateDict) {
    let state = read_state_dict(&fixture(file)).unwrap();
    let (imported, report) = import_state_dict(net(name, 10, width), &state, true).unwrap();
    assert!(report.missing.is_empty() && report.unused.is_empty());
    let io = read_state_dict(&fixture("torch_io.safetensors")).unwrap();
    let device = Device::flex();
    let model = set_norm_mode(imported.clone(), NormMode::EVAL);
    let x = Tensor::<4>::from_data(io["input"].clone(), &device);
    let got = f32s(&model.forward(x, None).unwrap().into_data());
    let want = f32s(&io[io_key]);
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * scale,
            "{name} logit {i}: {g} vs PyTorch {w}"
        );
    }
    (imported, state)
}

/// The export of `model` equals `state` tensor for tensor, bit for bit, through a file.
fn round_trip(model: &Network, state: &StateDict) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("out.safetensors");
    write_safetensors(&export_state_dict(model).unwrap(), &path).unwrap();
    let back = read_state_dict(&path).unwrap();
    assert_eq!(back.len(), state.len());
    for (k, original) in state {
        let exported = &back[k];
        assert_eq!(exported.shape(), original.shape(), "`{k}`");
        assert_eq!(exported.dtype(), original.dtype(), "`{k}`");
        assert_eq!(exported.as_bytes(), original.as_bytes(), "`{k}` differs");
    }
}

#[test]
fn an_imported_resnet_gives_pytorchs_logits_and_exports_back_bit_for_bit() {
    let (model, state) = logits_match("resnet18_w8.pth", "resnet18", 0.125, "resnet18_w8");
    round_trip(&model, &state);
}

#[test]
fn an_imported_mobilenet_gives_pytorchs_logits_and_exports_back_bit_for_bit() {
    let (model, state) = logits_match(
        "mobilenetv2_w01.safetensors",
        "mobilenetv2",
        0.1,
        "mobilenetv2_w01",
    );
    round_trip(&model, &state);
}

#[test]
fn a_file_that_does_not_fit_is_an_error_naming_the_key() {
    let state = read_state_dict(&fixture("resnet18_w8.pth")).unwrap();
    // a width the file was not made at: the first tensor that does not fit is named
    let err = import_state_dict(net("resnet18", 10, 0.25), &state, true)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("conv1.weight") && err.contains("[8, 3, 7, 7]"),
        "{err}"
    );
    // a missing key: strict refuses and names it; not strict leaves it at init and says so
    let mut partial = state.clone();
    partial.remove("layer2.0.bn1.running_var");
    let err = import_state_dict(net("resnet18", 10, 0.125), &partial, true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("layer2.0.bn1.running_var"), "{err}");
    let (_, report) = import_state_dict(net("resnet18", 10, 0.125), &partial, false).unwrap();
    assert_eq!(report.missing, ["layer2.0.bn1.running_var"]);
    // an unexpected key is named too
    let mut extra = state.clone();
    extra.insert("head.weight".into(), TensorData::new(vec![0f32], [1]));
    let err = import_state_dict(net("resnet18", 10, 0.125), &extra, true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("head.weight"), "{err}");
    // the wrong network: every key of the other layout is missing
    let err = import_state_dict(net("mobilenetv2", 10, 0.1), &state, true)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("features.0.0.weight") && err.contains("layer1.0.conv1.weight"),
        "{err}"
    );
    // a network torchvision does not have
    let err = export_state_dict(&net("plain-cnn", 10, 1.0))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("torchvision"), "{err}");
    // a file that is not a state dict
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.pth");
    std::fs::write(&junk, b"not a pickle").unwrap();
    assert!(read_state_dict(&junk).is_err());
}

#[test]
fn truncated_and_foreign_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (fixture_name, name, keep) in [
        ("resnet18_w8.pth", "cut.pth", 5000),
        ("mobilenetv2_w01.safetensors", "cut.safetensors", 3000),
        ("mobilenetv2_w01.safetensors", "text.pt", 0),
    ] {
        let bytes = std::fs::read(fixture(fixture_name)).unwrap();
        let path = tmp.path().join(name);
        let contents = if keep == 0 {
            b"not a checkpoint".to_vec()
        } else {
            bytes[..keep].to_vec()
        };
        std::fs::write(&path, contents).unwrap();
        let err = read_state_dict(&path).unwrap_err();
        assert!(
            matches!(&err, bnlab_models::ModelError::Weights { path: p, .. } if *p == path),
            "{name}: {err:?}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "{name}: no cause"
        );
    }
}
