//! What the loop adds for token-sequence data: the vocabulary stored with the run, the source's
//! entropy rate beside the measured loss (theory beside measurement), and text sampled from the
//! model after each evaluation.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::model::Model;
use crate::store::MetricRow;
use crate::task::SequenceInfo;

use super::metric;

pub(crate) struct SequenceReport<'a> {
    info: &'a SequenceInfo,
    /// `samples.txt` in the run's folder.
    samples: Option<PathBuf>,
    /// The first test token: every sample starts from it.
    prompt: usize,
    seed: u64,
}

impl<'a> SequenceReport<'a> {
    /// Writes `vocab.json` to the run's folder.
    pub(crate) fn new(
        info: &'a SequenceInfo,
        artifacts: Option<&Path>,
        prompt: usize,
        seed: u64,
    ) -> Result<Self, Error> {
        if let Some(dir) = artifacts {
            let p = dir.join("vocab.json");
            std::fs::write(&p, info.vocab_json()).map_err(Error::io(&p))?;
        }
        Ok(SequenceReport {
            info,
            samples: artifacts.map(|d| d.join("samples.txt")),
            prompt,
            seed,
        })
    }

    /// Step 0, once: the source's entropy rate (nats and bits per token) and the Bayes-optimal
    /// loss averaged over a window's positions, when the task knows them.
    pub(crate) fn start(&self, rows: &mut Vec<MetricRow>) {
        if let Some(e) = &self.info.entropy {
            rows.push(metric(0, "entropy_rate", e.nats));
            rows.push(metric(0, "entropy_rate_bits", e.bits()));
            rows.push(metric(0, "bayes_loss", e.window_nats));
        }
    }

    /// After an evaluation at `step` with test loss `test_loss`: `excess_loss` over the entropy
    /// rate, and one sampled line appended to `samples.txt` (windows of 8 tokens or more).
    pub(crate) fn after_eval<F: Float>(
        &self,
        step: u64,
        test_loss: f64,
        model: &mut dyn Model<F>,
        rows: &mut Vec<MetricRow>,
    ) -> Result<(), Error> {
        if let Some(e) = &self.info.entropy {
            rows.push(metric(step, "excess_loss", test_loss - e.nats));
        }
        let Some(path) = &self.samples else {
            return Ok(());
        };
        if self.info.seq_len < 8 {
            return Ok(());
        }
        let mut rng = Rng::stream(self.seed ^ step, "samples");
        let Some(tokens) = model.generate(&[self.prompt], self.info.seq_len, &mut rng) else {
            return Ok(());
        };
        let text = self.decode(&tokens);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(Error::io(path))?;
        writeln!(f, "step {step}: {}", text.escape_debug()).map_err(Error::io(path))
    }

    /// The run's closing message: validation loss against the entropy rate.
    pub(crate) fn message(&self, test_loss: f64) -> Option<String> {
        let e = self.info.entropy.as_ref()?;
        Some(format!(
            "validation loss {:.4} nats/token vs entropy rate {:.4} ({:.4} bits; Bayes window loss {:.4}): {:+.1}%",
            test_loss,
            e.nats,
            e.bits(),
            e.window_nats,
            100.0 * (test_loss / e.nats - 1.0)
        ))
    }

    /// Token ids as text: characters joined, longer tokens spaced.
    fn decode(&self, tokens: &[usize]) -> String {
        let vocab = &self.info.vocab;
        let sep = if vocab.iter().all(|v| v.chars().count() == 1) {
            ""
        } else {
            " "
        };
        tokens
            .iter()
            .map(|&i| vocab[i].as_str())
            .collect::<Vec<_>>()
            .join(sep)
    }
}
