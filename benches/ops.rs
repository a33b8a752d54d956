//! criterion benches over the cases of `bella bench` (`bella::bench::cases`), on every
//! backend that opens here; absent ones are skipped with a notice. Each run is timed by
//! the same timers as `bella bench` (device clock for single ops where a backend has one,
//! else the wall clock between device synchronisations).
//!
//! `cargo bench` runs them all; `cargo bench -- cpu/lora` filters. `BELLA_BENCH_QUICK=1`
//! uses the `--quick` shapes. The ratios the issue asks for come from `bella bench`, which
//! interleaves the variants it compares; the `lora_forward_variants` group here shows the
//! same variants to criterion.

use bella::backend::{self, Backend, BackendKind};
use bella::bench::baselines::lora_forward_variants;
use bella::bench::cases::{self, RunOnce, Scale, BENCH_OPS};
use bella::bench::timer::{op_timer, Timer, WallClock};
use bella::rng::Rng;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use std::sync::Arc;
use std::time::Duration;

fn open_or_skip(kind: BackendKind) -> Option<Arc<dyn Backend>> {
    match backend::open(kind) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("notice: skipping {kind} benches: {e}");
            None
        }
    }
}

/// criterion's iteration count, timed by one of our timers (sum over the iterations).
fn bench_body(
    group: &mut BenchmarkGroup<WallTime>,
    id: BenchmarkId,
    timer: &dyn Timer,
    body: &mut RunOnce,
) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = 0.0;
            for _ in 0..iters {
                total += timer.time(body.as_mut()).expect("benchmark body failed");
            }
            Duration::from_secs_f64(total)
        })
    });
}

fn ops(c: &mut Criterion) {
    let quick = std::env::var("BELLA_BENCH_QUICK").is_ok_and(|v| v == "1");
    for kind in [BackendKind::Cpu, BackendKind::Wgpu, BackendKind::Cuda] {
        let Some(be) = open_or_skip(kind) else {
            continue;
        };
        let scale = Scale::for_backend(kind);
        let wall = WallClock::new(be.clone());
        let device_clock = op_timer(&be);
        let mut group = c.benchmark_group(kind.name());
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        let mut rng = Rng::new(1);
        for op in BENCH_OPS {
            for case in cases::cases(op, scale, quick) {
                let mut body = case
                    .prepare(&be, &mut rng)
                    .expect("preparing a benchmark case");
                let timer: &dyn Timer = if case.single_submission {
                    device_clock.as_ref()
                } else {
                    &wall
                };
                group.throughput(Throughput::Bytes(case.work.bytes as u64));
                bench_body(
                    &mut group,
                    BenchmarkId::new(op, &case.shape),
                    timer,
                    &mut body,
                );
            }
        }
        group.finish();

        // The variants `bella bench` compares, for criterion's statistics.
        let mut group = c.benchmark_group(format!("{}/lora_forward_variants", kind.name()));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        for shared in [true, false] {
            let shape = cases::target_lora_shape(scale, shared);
            let mut v = lora_forward_variants(&be, shape).expect("preparing the LoRA variants");
            let label = shape.label();
            for (name, body) in [
                ("fused", &mut v.fused),
                ("per_particle_loop", &mut v.per_particle_loop),
                ("merged_ensemble", &mut v.merged_ensemble),
            ] {
                bench_body(&mut group, BenchmarkId::new(name, &label), &wall, body);
            }
        }
        group.finish();
    }
}

criterion_group!(benches, ops);
criterion_main!(benches);
