//! Any UTF-8 text file as a token stream, tokenized by characters or by bytes. The vocabulary
//! is the sorted set of tokens that occur (stored with the run as `vocab.json`). The first
//! `1 − val_fraction` of the stream trains and the rest validates (a contiguous split, as
//! nanoGPT's shakespeare_char); each part is cut into consecutive windows of `seq_len + 1`
//! tokens that overlap by one (the last input's target is the next window's first input).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sequence::{self, SequenceInfo};
use super::{at_least, counts, key, open_fraction, read_bytes, Dataset, TaskError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenizer {
    /// Unicode scalar values.
    Chars,
    /// Raw bytes (the vocabulary is the bytes that occur, at most 256).
    Bytes,
}

/// `[task.text]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// The text file, relative to the experiment file's folder.
    pub path: PathBuf,
    /// Characters: nanoGPT's shakespeare_char convention.
    #[serde(default = "d_tokenizer")]
    pub tokenizer: Tokenizer,
    /// 64 tokens per window: the reference GPT's context.
    #[serde(default = "d_seq_len")]
    pub seq_len: usize,
    /// 10% validates: nanoGPT's split.
    #[serde(default = "d_val_fraction")]
    pub val_fraction: f64,
}

fn d_tokenizer() -> Tokenizer {
    Tokenizer::Chars
}
fn d_seq_len() -> usize {
    64
}
fn d_val_fraction() -> f64 {
    0.1
}

impl TextSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        at_least(key("text", "seq_len"), self.seq_len, 1, "e.g. seq_len = 64")?;
        open_fraction(
            key("text", "val_fraction"),
            self.val_fraction,
            "e.g. val_fraction = 0.1",
        )
    }

    pub fn load(&self, base_dir: &Path) -> Result<Dataset, TaskError> {
        let k = key("text", "path");
        let bytes = read_bytes(&k, base_dir, &self.path)?;
        let path = super::resolve(base_dir, &self.path);
        let (ids, vocab): (Vec<usize>, Vec<String>) = match self.tokenizer {
            Tokenizer::Bytes => {
                let mut seen = [false; 256];
                for &b in &bytes {
                    seen[b as usize] = true;
                }
                let symbols: Vec<u8> = (0..=255u8).filter(|&b| seen[b as usize]).collect();
                let mut index = [0usize; 256];
                for (i, &b) in symbols.iter().enumerate() {
                    index[b as usize] = i;
                }
                (
                    bytes.iter().map(|&b| index[b as usize]).collect(),
                    symbols
                        .iter()
                        .map(|&b| match b {
                            0x20..=0x7e => (b as char).to_string(),
                            _ => format!("<0x{b:02x}>"),
                        })
                        .collect(),
                )
            }
            Tokenizer::Chars => {
                let text = String::from_utf8(bytes).map_err(|e| TaskError::Parse {
                    key: k.clone(),
                    path: path.clone(),
                    msg: format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
                    hint: "use tokenizer = \"bytes\" for non-UTF-8 files".into(),
                })?;
                let mut symbols: Vec<char> = text.chars().collect();
                symbols.sort_unstable();
                symbols.dedup();
                let ids = text
                    .chars()
                    .map(|ch| symbols.binary_search(&ch).unwrap_or(0))
                    .collect();
                (ids, symbols.iter().map(|c| c.to_string()).collect())
            }
        };
        let t = self.seq_len;
        let n_val_tokens = (ids.len() as f64 * self.val_fraction).floor() as usize;
        let split = ids.len() - n_val_tokens;
        let windows = |s: &[usize]| -> Vec<Vec<usize>> {
            if s.len() < t + 1 {
                return Vec::new();
            }
            (0..(s.len() - 1) / t)
                .map(|i| s[i * t..i * t + t + 1].to_vec())
                .collect()
        };
        let train = windows(&ids[..split]);
        let test = windows(&ids[split..]);
        if train.is_empty() || test.is_empty() {
            return Err(TaskError::Shape {
                key: k,
                msg: format!(
                    "{} tokens leave {} train / {} validation windows of {} + 1",
                    ids.len(),
                    train.len(),
                    test.len(),
                    t
                ),
                hint: "use a longer text, a shorter seq_len or another val_fraction".into(),
            });
        }
        // The tokenizer's name as the spec writes it; the path exactly as written.
        let tokenizer = format!("{:?}", self.tokenizer).to_lowercase();
        let description = format!(
            "text {} ({} tokens by {tokenizer}, vocabulary {}): {} windows of {t}",
            self.path.display(),
            ids.len(),
            vocab.len(),
            counts(train.len(), test.len())
        );
        let info = SequenceInfo {
            vocab,
            seq_len: t,
            entropy: None,
            trained: sequence::Trained::All,
        };
        Ok(sequence::dataset(&train, &test, t, info, description))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_and_bytes_tokenize_and_split() {
        let dir = std::env::temp_dir().join(format!("cc-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = "héllo wörld, ".repeat(40);
        std::fs::write(dir.join("t.txt"), &text).unwrap();
        let spec = TextSpec {
            path: "t.txt".into(),
            tokenizer: Tokenizer::Chars,
            seq_len: 8,
            val_fraction: 0.25,
        };
        let d = spec.load(&dir).unwrap();
        let info = d.sequence.clone().unwrap();
        assert_eq!(info.vocab.concat(), " ,dhlorwéö");
        let n = text.chars().count();
        let split = n - n / 4;
        assert_eq!(d.n_train(), (split - 1) / 8);
        // Decoding the first window gives the text back; targets are shifted inputs.
        let dec: String = d
            .train_x
            .row(0)
            .iter()
            .map(|&i| info.vocab[i as usize].clone())
            .collect();
        assert_eq!(dec, text.chars().take(8).collect::<String>());
        assert_eq!(d.train_y[[0, 0]], d.train_x[[0, 1]]);
        assert_eq!(d.train_y[[0, 7]], d.train_x[[1, 0]]);
        let bytes = TextSpec {
            tokenizer: Tokenizer::Bytes,
            ..spec
        }
        .load(&dir)
        .unwrap();
        // 8 ASCII bytes; é and ö are two bytes each, 0xc3 shared, then 0xa9 and 0xb6.
        assert_eq!(bytes.sequence.unwrap().vocab.len(), 11);
        std::fs::remove_dir_all(&dir).ok();
    }
}
