//! The |x̂| outlier probe against a count from plain f64 loops.

use bnlab_norm::{NormConfig, norm_sites, set_outlier_probe};
use burn::tensor::{Device, Tensor, TensorData};

#[test]
fn the_probe_counts_what_an_f64_reference_counts() {
    let device = Device::flex();
    let (n, c, s) = (40usize, 3usize, 4usize);
    // smooth values with a few large spikes
    let mut x = vec![0f32; n * c * s];
    for (i, v) in x.iter_mut().enumerate() {
        *v = ((i * 7919) % 97) as f32 / 97.0;
        if i % 37 == 0 {
            *v += 40.0;
        }
    }
    let norm = NormConfig::new(c).init(&device).unwrap();
    let norm = set_outlier_probe(norm, Some(6.0));
    let input = Tensor::<3>::from_data(TensorData::new(x.clone(), [n, c, s]), &device);
    norm.forward(input).unwrap();

    // reference: per channel over (N, S), biased variance, ε = 1e-5
    let mut over = 0u64;
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| (0..s).map(move |j| (i, j)))
            .map(|(i, j)| x[(i * c + ch) * s + j] as f64)
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64;
        over += vals
            .iter()
            .filter(|v| ((*v - m) / (var + 1e-5).sqrt()).abs() > 6.0)
            .count() as u64;
    }
    assert!(over > 0, "the data must have outliers");
    let (norm, sites) = norm_sites(norm);
    let o = sites[0].outliers.expect("probe installed");
    assert_eq!((o.over, o.total), (over, (n * c * s) as u64));
    // removing the probe removes the counts
    let (_, sites) = norm_sites(set_outlier_probe(norm, None));
    assert!(sites[0].outliers.is_none());
}
