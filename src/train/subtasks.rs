//! What the loop adds for multitask data: the loss and accuracy of every subtask on its own, at
//! each evaluation, beside the subtask's frequency — so the order in which the quanta of
//! Michaud et al. (2023, "The Quantization Model of Neural Scaling") are learned is visible.
//!
//! Rows: `subtask_freq_{t}` and `subtask_count_{t}` (its held-out examples) once at step 0;
//! `subtask_loss_{t}` and `subtask_acc_{t}` on the held-out examples of subtask `t` at every
//! evaluation (subtasks without a held-out example get none).

use crate::engine::Float;
use crate::model::Model;
use crate::store::MetricRow;
use crate::task::Subtasks;

use super::data::{Gathered, Split};
use super::{metric, Tally};

pub(crate) struct SubtaskReport<F> {
    frequency: Vec<f64>,
    /// The held-out examples of each subtask, by index into the test split.
    members: Vec<Vec<usize>>,
    buf: Gathered<F>,
}

impl<F: Float> SubtaskReport<F> {
    pub(crate) fn new(s: &Subtasks, test: &Split<F>, capacity: usize) -> Self {
        let mut members = vec![Vec::new(); s.frequency.len()];
        for (i, &t) in s.test.iter().enumerate() {
            if let Some(m) = members.get_mut(t) {
                m.push(i);
            }
        }
        SubtaskReport {
            frequency: s.frequency.clone(),
            members,
            buf: test.buffers(capacity),
        }
    }

    /// Step 0, once: each subtask's frequency and held-out count.
    pub(crate) fn start(&self, rows: &mut Vec<MetricRow>) {
        for (t, (f, m)) in self.frequency.iter().zip(&self.members).enumerate() {
            rows.push(metric(0, &format!("subtask_freq_{t}"), *f));
            rows.push(metric(0, &format!("subtask_count_{t}"), m.len() as f64));
        }
    }

    /// After an evaluation at `step`: each subtask's held-out loss and accuracy (eval mode, in
    /// chunks of the model's capacity, which the buffers were sized for).
    pub(crate) fn after_eval(
        &mut self,
        step: u64,
        model: &mut dyn Model<F>,
        test: &Split<F>,
        rows: &mut Vec<MetricRow>,
    ) {
        let cap = model.capacity();
        for (t, m) in self.members.iter().enumerate() {
            if m.is_empty() {
                continue;
            }
            let mut tally = Tally::default();
            for chunk in m.chunks(cap) {
                tally.add(model, &test.gather(chunk, 0, &mut self.buf));
            }
            let (loss, acc) = tally.result();
            rows.push(metric(step, &format!("subtask_loss_{t}"), loss));
            if let Some(a) = acc {
                rows.push(metric(step, &format!("subtask_acc_{t}"), a));
            }
        }
    }
}
