//! Anchor re-weighting (§3.1): a learnable β per layer, head and demonstration label position;
//! the post-softmax attention from the query to label position p_i is multiplied by exp(β)
//! (no renormalisation, as the official code). The LM stays frozen.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use plm::hooks::AttentionHooks;

use crate::Error;
use crate::calibrate::Calibration;
use crate::model::CausalLm;
use crate::prompt::{LabelTokens, Prompt};

/// β `[layers, heads, demonstration labels]`, zero at start (= the unmodified model).
#[derive(Module, Debug)]
pub struct Reweighting {
    /// The log-scales.
    pub beta: Param<Tensor<3>>,
}

impl Reweighting {
    /// Zero β.
    pub fn new(n_layers: usize, n_heads: usize, n_labels: usize, device: &Device) -> Self {
        Self {
            beta: Param::from_tensor(Tensor::zeros([n_layers, n_heads, n_labels], device)),
        }
    }

    /// Scale hooks for `prompt` (differentiable in β): for every layer,
    /// 1 + (exp(β_l) − 1) at (q, p_i), 1 elsewhere.
    pub fn hooks(&self, prompt: &Prompt) -> crate::Result<AttentionHooks> {
        let beta = self.beta.val();
        let [l, h, c] = beta.dims();
        let labels = prompt.label_positions(LabelTokens::First);
        if labels.len() != c {
            return Err(Error::BadPrompt(format!(
                "{} label positions for β over {c}",
                labels.len()
            )));
        }
        let n = prompt.ids.len();
        let device = beta.device();
        let mut e = vec![0f32; c * n * n];
        for (i, &p) in labels.iter().enumerate() {
            e[i * n * n + prompt.query * n + p] = 1.0;
        }
        let e = Tensor::<2>::from_data(TensorData::new(e, [c, n * n]), &device);
        let mut hooks = AttentionHooks::none();
        for layer in 0..l {
            let b = beta
                .clone()
                .slice(s![layer..layer + 1, .., ..])
                .reshape([h, c]);
            let scale = (b.exp().sub_scalar(1.0))
                .matmul(e.clone())
                .add_scalar(1.0)
                .reshape([1, h, n, n]);
            hooks.scale.insert(layer, scale);
        }
        Ok(hooks)
    }

    /// The cross-entropy of the label-word logits at the query against `gold`, under β.
    pub fn loss<M: CausalLm>(
        &self,
        model: &M,
        prompt: &Prompt,
        label_ids: &[u32],
        gold: usize,
    ) -> crate::Result<Tensor<1>> {
        self.loss_calibrated(model, prompt, label_ids, gold, &Calibration::identity())
    }

    /// [`Reweighting::loss`] with the label-word logits read through `calibration` (shifted
    /// by its constant `−log p_cf`, [`Calibration::log_prior`]), so β is learnt for the readout the predictions use.
    pub fn loss_calibrated<M: CausalLm>(
        &self,
        model: &M,
        prompt: &Prompt,
        label_ids: &[u32],
        gold: usize,
        calibration: &Calibration,
    ) -> crate::Result<Tensor<1>> {
        let hooks = self.hooks(prompt)?;
        label_loss_offset(
            model,
            prompt,
            label_ids,
            gold,
            &hooks,
            calibration.log_prior(),
            &self.beta.val().device(),
        )
    }
}

/// The cross-entropy of the label-word logits at the query against `gold` under `hooks`.
pub fn label_loss<M: CausalLm>(
    model: &M,
    prompt: &Prompt,
    label_ids: &[u32],
    gold: usize,
    hooks: &AttentionHooks,
    device: &Device,
) -> crate::Result<Tensor<1>> {
    label_loss_offset(model, prompt, label_ids, gold, hooks, None, device)
}

/// [`label_loss`] with `log_prior` (one value per label word) subtracted from the label-word
/// logits before the softmax (contextual calibration's readout; `None`: none).
pub fn label_loss_offset<M: CausalLm>(
    model: &M,
    prompt: &Prompt,
    label_ids: &[u32],
    gold: usize,
    hooks: &AttentionHooks,
    log_prior: Option<&[f32]>,
    device: &Device,
) -> crate::Result<Tensor<1>> {
    if let Some(lp) = log_prior
        && lp.len() != label_ids.len()
    {
        return Err(Error::BadPrompt(format!(
            "calibration over {} classes for {} label words",
            lp.len(),
            label_ids.len()
        )));
    }
    if gold >= label_ids.len() {
        return Err(Error::BadPrompt(format!(
            "gold class {gold} of {}",
            label_ids.len()
        )));
    }
    let v: Vec<i64> = prompt.ids.iter().map(|&t| i64::from(t)).collect();
    let (logits, _) = model.forward_hooked(
        Tensor::from_data(TensorData::new(v, [1, prompt.ids.len()]), device),
        hooks,
    );
    let [_, _, vocab] = logits.dims();
    let q = prompt.query;
    let row = logits
        .slice(s![0..1, q..q + 1, 0..vocab])
        .reshape([1, vocab]);
    let idx: Vec<i64> = label_ids.iter().map(|&t| i64::from(t)).collect();
    let mut ll = row.select(
        1,
        Tensor::<1, Int>::from_data(TensorData::new(idx, [label_ids.len()]), device),
    );
    if let Some(lp) = log_prior {
        ll = ll.sub(Tensor::<2>::from_data(
            TensorData::new(lp.to_vec(), [1, lp.len()]),
            device,
        ));
    }
    Ok(log_softmax(ll, 1)
        .slice(s![0..1, gold..gold + 1])
        .reshape([1])
        .neg())
}
