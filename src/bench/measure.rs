//! Warm-up, then repeated timed runs until both a minimum count and a minimum total time are
//! reached; the median and the spread of the runs. Bodies compared with each other are
//! measured interleaved (A B C A B C …) so that a noisy, shared machine slows them alike.

use super::timer::{Body, Timer};
use crate::error::Result;
use serde::Serialize;
use std::time::{Duration, Instant};

/// How long to measure each case.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub warmup_runs: usize,
    pub min_runs: usize,
    pub max_runs: usize,
    /// Keep running (up to `max_runs`) until this much time has been spent timing.
    pub min_time: Duration,
}

impl Budget {
    pub fn full() -> Self {
        Budget {
            warmup_runs: 2,
            min_runs: 7,
            max_runs: 60,
            min_time: Duration::from_millis(1500),
        }
    }
    pub fn quick() -> Self {
        Budget {
            warmup_runs: 1,
            min_runs: 3,
            max_runs: 15,
            min_time: Duration::from_millis(150),
        }
    }
}

/// Summary of the runs of one body, in seconds.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub runs: usize,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// Median absolute deviation over the median, in percent: the spread a reader should
    /// expect between two runs of the same command.
    pub mad_pct: f64,
}

impl Stats {
    pub fn from_samples(samples: &[f64]) -> Stats {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let median = median_sorted(&s);
        let mut dev: Vec<f64> = s.iter().map(|x| (x - median).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let mad = median_sorted(&dev);
        Stats {
            runs: s.len(),
            median_s: median,
            min_s: s.first().copied().unwrap_or(f64::NAN),
            max_s: s.last().copied().unwrap_or(f64::NAN),
            mad_pct: if median > 0.0 {
                100.0 * mad / median
            } else {
                0.0
            },
        }
    }
}

fn median_sorted(s: &[f64]) -> f64 {
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// Time one body.
pub fn measure(timer: &dyn Timer, budget: &Budget, body: &mut Body) -> Result<Stats> {
    let mut all = measure_interleaved(timer, budget, &mut [body])?;
    Ok(all.remove(0))
}

/// Time several bodies round-robin; one `Stats` per body, in order.
pub fn measure_interleaved(
    timer: &dyn Timer,
    budget: &Budget,
    bodies: &mut [&mut Body],
) -> Result<Vec<Stats>> {
    for _ in 0..budget.warmup_runs {
        for body in bodies.iter_mut() {
            timer.time(*body)?;
        }
    }
    let mut samples = vec![Vec::new(); bodies.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < budget.min_runs
        || (rounds < budget.max_runs && start.elapsed() < budget.min_time)
    {
        for (body, s) in bodies.iter_mut().zip(samples.iter_mut()) {
            s.push(timer.time(*body)?);
        }
        rounds += 1;
    }
    Ok(samples.iter().map(|s| Stats::from_samples(s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_median_and_spread() {
        let s = Stats::from_samples(&[3.0, 1.0, 2.0, 100.0]);
        assert_eq!(s.runs, 4);
        assert_eq!(s.median_s, 2.5);
        assert_eq!(s.min_s, 1.0);
        assert_eq!(s.max_s, 100.0);
        // Deviations 0.5, 0.5, 1.5, 97.5: MAD 1.0, i.e. 40 % of 2.5.
        assert!((s.mad_pct - 40.0).abs() < 1e-9);
    }
}
