//! Tokenisation with the `tokenizers` crate: load a `tokenizer.json` (e.g. all-MiniLM-L6-v2's)
//! or train a BERT-style WordPiece vocabulary on a suite's text, then encode batches with
//! padding and truncation that we control.
//!
//! A loaded `tokenizer.json` may carry its own padding and truncation (MiniLM's pads every
//! sentence to 128 tokens); we switch both off on load, so a batch is padded to its longest
//! sentence (or to a fixed length when asked) and truncated at the `max_len` given to
//! [`Tokenizer::encode_batch`], keeping the final `[SEP]`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{DataError, Result, io};

/// BERT's special tokens, in the id order a trained vocabulary gives them (0..=4).
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// A tokenizer with our padding and truncation rules.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pad_id: u32,
    source: Option<std::path::PathBuf>,
    /// `inner` set to truncate at the last `max_len` asked for (cloning a tokenizer copies
    /// its vocabulary, so it is done once per length, not once per call).
    truncating: Arc<Mutex<Option<TruncatingAt>>>,
}

/// A copy of the tokenizer that truncates at the given length.
type TruncatingAt = (usize, Arc<tokenizers::Tokenizer>);

/// How to pad a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// To the longest sequence of the batch.
    Longest,
    /// To exactly this many tokens (after truncation at `max_len`, which must not exceed it).
    Fixed(usize),
}

/// Token ids of a batch, row-major `[batch, len]`, ready for the model crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub ids: Vec<i64>,
    /// 1 for a real token, 0 for padding.
    pub mask: Vec<i64>,
    pub batch: usize,
    pub len: usize,
    /// Texts that were longer than `max_len` and lost tokens.
    pub truncated: usize,
}

impl Tokenizer {
    /// Loads a `tokenizer.json`. Its own padding and truncation are switched off.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = io(path, std::fs::read(path))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| tok_err(path, e))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| tok_err(path, e))?;
        Self::wrap(inner, Some(path.to_path_buf()))
    }

    /// Trains a lower-casing BERT WordPiece tokenizer on `texts`: at most `vocab_size`
    /// entries (the special tokens, every character seen, then sub-words learned by BPE merges
    /// that occur at least `min_frequency` times; see [`crate::wordpiece`]). The result
    /// depends only on the texts and their order.
    pub fn train_wordpiece<I, S>(texts: I, vocab_size: usize, min_frequency: u64) -> Result<Self>
    where
        I: Iterator<Item = S>,
        S: AsRef<str>,
    {
        use std::collections::BTreeMap;
        use tokenizers::{
            NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
            PreTokenizer,
        };
        let fail = |reason: String| DataError::Tokenizer { path: None, reason };
        let normalizer = BertNormalizer::new(true, true, None, true);
        let mut words: BTreeMap<String, u64> = BTreeMap::new();
        for text in texts {
            let mut n = NormalizedString::from(text.as_ref());
            normalizer
                .normalize(&mut n)
                .map_err(|e| fail(e.to_string()))?;
            let mut pre = PreTokenizedString::from(n);
            BertPreTokenizer
                .pre_tokenize(&mut pre)
                .map_err(|e| fail(e.to_string()))?;
            for (w, _, _) in pre.get_splits(OffsetReferential::Normalized, OffsetType::Char) {
                *words.entry(w.to_string()).or_default() += 1;
            }
        }
        let vocab =
            crate::wordpiece::learn_vocab(&words, &SPECIAL_TOKENS, vocab_size, min_frequency);
        if vocab.len() > vocab_size {
            return Err(DataError::OutOfRange {
                what: format!("vocab_size {vocab_size}"),
                allowed: format!(
                    "must be at least the {} special tokens and characters of the text",
                    vocab.len()
                ),
            });
        }
        let ids: serde_json::Map<String, serde_json::Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
            .collect();
        let special = |t: &str, id: usize| {
            serde_json::json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        };
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": SPECIAL_TOKENS.iter().enumerate().map(|(i, t)| special(t, i)).collect::<Vec<_>>(),
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                    {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                "special_tokens": {
                    "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                    "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
                }
            },
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100, "vocab": ids}
        });
        let inner = tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes())
            .map_err(|e| fail(format!("building the trained tokenizer: {e}")))?;
        Self::wrap(inner, None)
    }

    fn wrap(inner: tokenizers::Tokenizer, source: Option<std::path::PathBuf>) -> Result<Self> {
        let pad_id = inner
            .token_to_id("[PAD]")
            .ok_or_else(|| DataError::Tokenizer {
                path: source.clone(),
                reason: "vocabulary has no [PAD] token".into(),
            })?;
        Ok(Self {
            inner,
            pad_id,
            source,
            truncating: Arc::default(),
        })
    }

    /// Entries in the vocabulary (including special tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id used for padding.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The tokens (not ids) of one text with special tokens, for inspection and tests.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| self.err(format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_tokens().to_vec())
    }

    /// Encodes `texts` with special tokens, truncated to `max_len` tokens (the last kept token
    /// stays `[SEP]`) and padded as asked.
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        max_len: usize,
        padding: Padding,
    ) -> Result<TokenBatch> {
        if let Padding::Fixed(n) = padding
            && n < max_len
        {
            return Err(DataError::OutOfRange {
                what: format!("padding to fixed length {n}"),
                allowed: format!("must be at least max_len {max_len}"),
            });
        }
        let tok = self.truncating_at(max_len)?;
        let mut rows = Vec::with_capacity(texts.len());
        let mut truncated = 0;
        for t in texts {
            let enc = tok
                .encode(t.as_ref(), true)
                .map_err(|e| self.err(format!("cannot encode {:?}: {e}", t.as_ref())))?;
            truncated += usize::from(!enc.get_overflowing().is_empty());
            rows.push(enc.get_ids().to_vec());
        }
        let len = match padding {
            Padding::Fixed(n) => n,
            Padding::Longest => rows.iter().map(Vec::len).max().unwrap_or(0),
        };
        let mut ids = vec![i64::from(self.pad_id); rows.len() * len];
        let mut mask = vec![0i64; rows.len() * len];
        for (r, row) in rows.iter().enumerate() {
            for (j, &id) in row.iter().enumerate() {
                ids[r * len + j] = i64::from(id);
                mask[r * len + j] = 1;
            }
        }
        Ok(TokenBatch {
            ids,
            mask,
            batch: rows.len(),
            len,
            truncated,
        })
    }

    fn truncating_at(&self, max_len: usize) -> Result<Arc<tokenizers::Tokenizer>> {
        let mut cached = self
            .truncating
            .lock()
            .map_err(|_| self.err("a thread panicked while tokenising".into()))?;
        if let Some((len, tok)) = cached.as_ref()
            && *len == max_len
        {
            return Ok(Arc::clone(tok));
        }
        let mut tok = self.inner.clone();
        tok.with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| self.err(e.to_string()))?;
        let tok = Arc::new(tok);
        *cached = Some((max_len, Arc::clone(&tok)));
        Ok(tok)
    }

    /// Writes the tokenizer as `tokenizer.json` (atomically: temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        Ok(mmerge_core::atomic::write_atomic(
            path,
            self.to_json()?.as_bytes(),
        )?)
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| self.err(e.to_string()))
    }

    fn err(&self, reason: String) -> DataError {
        DataError::Tokenizer {
            path: self.source.clone(),
            reason,
        }
    }
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer {
        path: Some(path.to_path_buf()),
        reason: e.to_string(),
    }
}
