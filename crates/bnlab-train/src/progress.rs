//! Progress of a sweep: indicatif bars for runs, epochs and batches (with ETA and the current
//! loss and accuracy), or nothing under `--quiet`.

use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What the training loop reports.
pub trait Progress: Send + Sync {
    /// A run starts (or resumes at `epochs_done`).
    fn run_started(&self, _id: &str, _epochs: usize, _epochs_done: usize) {}
    /// An epoch of `batches` forward batches starts.
    fn epoch_started(&self, _id: &str, _epoch: usize, _batches: usize) {}
    /// A forward batch is done; the running means of the epoch so far.
    fn batch_done(&self, _id: &str, _loss: f64, _accuracy: f64) {}
    /// An epoch is done.
    fn epoch_done(&self, _id: &str, _epoch: usize, _summary: &str) {}
    /// A run is done (finished or failed).
    fn run_done(&self, _id: &str, _summary: &str) {}
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {}

/// indicatif bars: one for the sweep, and an epoch bar and a batch bar per active run.
pub struct Bars {
    multi: MultiProgress,
    sweep: ProgressBar,
    active: Mutex<Vec<(String, ProgressBar, ProgressBar)>>,
}

impl Bars {
    /// Bars for a sweep of `runs` runs, `done` of them already finished.
    pub fn new(runs: usize, done: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let sweep = multi.add(ProgressBar::new(runs as u64));
        sweep.set_style(style(
            "runs   {bar:30} {pos}/{len} [{elapsed_precise}, ETA {eta}] {msg}",
        ));
        sweep.set_position(done as u64);
        Self {
            multi,
            sweep,
            active: Mutex::new(Vec::new()),
        }
    }

    fn with_run(&self, id: &str, f: impl FnOnce(&ProgressBar, &ProgressBar)) {
        if let Ok(active) = self.active.lock()
            && let Some((_, epochs, batches)) = active.iter().find(|(i, _, _)| i == id)
        {
            f(epochs, batches);
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress for Bars {
    fn run_started(&self, id: &str, epochs: usize, epochs_done: usize) {
        let e = self.multi.add(ProgressBar::new(epochs as u64));
        e.set_style(style(
            "{prefix:>6} {bar:30} epoch {pos}/{len} [ETA {eta}] {msg}",
        ));
        e.set_prefix(id.to_string());
        e.set_position(epochs_done as u64);
        let b = self.multi.add(ProgressBar::new(0));
        b.set_style(style("       {bar:30} batch {pos}/{len} [ETA {eta}] {msg}"));
        if let Ok(mut active) = self.active.lock() {
            active.push((id.to_string(), e, b));
        }
    }

    fn epoch_started(&self, id: &str, _epoch: usize, batches: usize) {
        self.with_run(id, |_, b| {
            b.reset();
            b.set_length(batches as u64);
        });
    }

    fn batch_done(&self, id: &str, loss: f64, accuracy: f64) {
        self.with_run(id, |_, b| {
            b.inc(1);
            b.set_message(format!("loss {loss:.4} acc {:.2}%", 100.0 * accuracy));
        });
    }

    fn epoch_done(&self, id: &str, _epoch: usize, summary: &str) {
        self.with_run(id, |e, _| {
            e.inc(1);
            e.set_message(summary.to_string());
        });
    }

    fn run_done(&self, id: &str, summary: &str) {
        if let Ok(mut active) = self.active.lock()
            && let Some(pos) = active.iter().position(|(i, _, _)| i == id)
        {
            let (_, e, b) = active.remove(pos);
            e.finish_and_clear();
            b.finish_and_clear();
            self.multi.remove(&e);
            self.multi.remove(&b);
        }
        self.sweep.inc(1);
        self.sweep.set_message(format!("{id}: {summary}"));
        let _ = self.multi.println(format!("{id}: {summary}"));
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.sweep.finish();
    }
}
