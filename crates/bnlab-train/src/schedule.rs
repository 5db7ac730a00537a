//! Learning-rate schedules as pure functions of the optimizer step, and their
//! [`LrScheduler`] adapter for burn-optim's `ModuleLrScheduler`.

use std::f64::consts::PI;
use std::sync::Arc;

use burn::optim::LearningRate;
use burn::optim::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use serde::{Deserialize, Serialize};

/// The shape of the learning-rate curve over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Half-period cosine from the base rate to 0 over the whole run:
    /// `lr(t) = lr₀ · ½ (1 + cos(π t / T))` for update t of T.
    Cosine,
    /// The base rate times `factor` after each milestone epoch.
    Step {
        /// Epochs (1-based: the rate drops after this many epochs) at which the rate drops.
        milestones: Vec<usize>,
        /// The factor applied at each milestone.
        #[serde(default = "default_step_factor")]
        factor: f64,
    },
}

fn default_step_factor() -> f64 {
    0.1
}

/// A schedule laid out over a run: its length, optional warm-up and FrozenBN re-warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct LrCurve {
    /// The shape.
    pub schedule: Schedule,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// Optimizer steps in the run, T.
    pub total_steps: usize,
    /// Linear warm-up over the first this many steps: factor (t + 1) / w.
    pub warmup_steps: usize,
    /// A linear re-warm-up of `len` steps from step `start` (the FrozenBN switch, Wu &
    /// Johnson §4.3): factor (t − start + 1) / len inside it.
    pub rewarm: Option<(usize, usize)>,
}

impl LrCurve {
    /// The multiplier of the base rate at update `t` (0-based).
    pub fn factor(&self, t: usize) -> f64 {
        let total = self.total_steps.max(1) as f64;
        let base = match &self.schedule {
            Schedule::Constant => 1.0,
            Schedule::Cosine => 0.5 * (1.0 + (PI * t as f64 / total).cos()),
            Schedule::Step { milestones, factor } => {
                let epoch = t / self.steps_per_epoch.max(1);
                let passed = milestones.iter().filter(|&&m| epoch >= m).count();
                factor.powi(passed as i32)
            }
        };
        let warm = if t < self.warmup_steps {
            (t + 1) as f64 / self.warmup_steps as f64
        } else {
            1.0
        };
        let rewarm = match self.rewarm {
            Some((start, len)) if t >= start && t < start + len => {
                (t - start + 1) as f64 / len as f64
            }
            _ => 1.0,
        };
        base * warm * rewarm
    }
}

/// One parameter group's rate: `base` times the shared curve, stepping from update `t`.
#[derive(Debug, Clone)]
pub struct GroupLr {
    base: f64,
    curve: Arc<LrCurve>,
    t: usize,
}

impl GroupLr {
    /// A group with base rate `base` on `curve`, whose next step is update `t`.
    pub fn new(base: f64, curve: Arc<LrCurve>, t: usize) -> Self {
        Self { base, curve, t }
    }
}

impl LrScheduler for GroupLr {
    fn step(&mut self) -> LearningRate {
        let lr = self.base * self.curve.factor(self.t);
        self.t += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("t", self.t as u64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(t) = record.scalar::<u64>("t") {
            self.t = t as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(schedule: Schedule, warmup_steps: usize) -> LrCurve {
        LrCurve {
            schedule,
            steps_per_epoch: 10,
            total_steps: 100,
            warmup_steps,
            rewarm: None,
        }
    }

    #[test]
    fn cosine_halves_at_the_middle_and_reaches_zero_at_the_end() {
        let c = curve(Schedule::Cosine, 0);
        for t in [0usize, 13, 25, 50, 77, 99] {
            let expected = (1.0 + (std::f64::consts::PI * t as f64 / 100.0).cos()) / 2.0;
            assert!((c.factor(t) - expected).abs() < 1e-12, "t = {t}");
        }
        assert_eq!(c.factor(0), 1.0);
        assert!((c.factor(50) - 0.5).abs() < 1e-12);
        assert!((c.factor(25) - (0.5 + 0.5 * 0.5f64.sqrt())).abs() < 1e-12);
        assert!(c.factor(100).abs() < 1e-12);
        assert!((1..100).all(|t| c.factor(t) < c.factor(t - 1)));
    }

    #[test]
    fn step_drops_after_each_milestone_epoch() {
        let c = curve(
            Schedule::Step {
                milestones: vec![3, 6],
                factor: 0.1,
            },
            0,
        );
        assert_eq!(c.factor(29), 1.0);
        assert!((c.factor(30) - 0.1).abs() < 1e-15);
        assert!((c.factor(60) - 0.01).abs() < 1e-15);
    }

    #[test]
    fn warmup_and_rewarm_are_linear() {
        let mut c = curve(Schedule::Constant, 4);
        assert_eq!(
            (0..5).map(|t| c.factor(t)).collect::<Vec<_>>(),
            vec![0.25, 0.5, 0.75, 1.0, 1.0]
        );
        c.rewarm = Some((40, 10));
        assert_eq!(c.factor(39), 1.0);
        assert!((c.factor(40) - 0.1).abs() < 1e-15);
        assert!((c.factor(44) - 0.5).abs() < 1e-15);
        assert_eq!(c.factor(50), 1.0);
    }

    #[test]
    fn group_rates_scale_the_curve_and_resume_from_a_record() {
        let c = Arc::new(curve(Schedule::Cosine, 0));
        let mut a = GroupLr::new(0.1, c.clone(), 0);
        let first: Vec<f64> = (0..7).map(|_| a.step()).collect();
        assert!((first[3] - 0.1 * c.factor(3)).abs() < 1e-15);
        let mut b = GroupLr::new(0.1, c, 0);
        b.load_record(a.to_record());
        assert_eq!(b.step(), a.step());
    }
}
