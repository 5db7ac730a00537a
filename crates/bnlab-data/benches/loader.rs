//! Loader throughput on CIFAR-sized images with pad-4 crop and flip, 2 worker threads.
//! Target: ≥ 20,000 images/s on 2 cores (BENCHMARKS.md).

use std::sync::Arc;

use bnlab_data::{Augment, Batching, Loader, LoaderConfig, synthetic};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn loader(c: &mut Criterion) {
    let set = Arc::new(synthetic(10, 1000, [3, 32, 32], 0.3, 1).expect("synthetic set"));
    let pool: Vec<usize> = (0..10_000).collect();
    let config = LoaderConfig::new(
        Batching::shuffle(256, false),
        Augment::PadCropFlip { pad: 4 },
        1,
    );
    let loader = Loader::new(set, config).expect("loader");
    let device = burn::tensor::Device::flex();
    let mut group = c.benchmark_group("loader");
    group.throughput(Throughput::Elements(pool.len() as u64));
    group.sample_size(20);
    group.bench_function("cifar_epoch_10k_padcropflip_2threads", |b| {
        let mut epoch = 0;
        b.iter(|| {
            epoch += 1;
            let batches = loader.epoch(&pool, None, epoch).expect("epoch");
            // up to Burn tensors on the default (Flex) device
            batches
                .map(|b| b.expect("batch").to_device(&device).images.dims()[0])
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, loader);
criterion_main!(benches);
