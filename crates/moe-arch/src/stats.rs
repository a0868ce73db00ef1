//! Routing statistics for analysis: per expert, its share of the routed assignments and its
//! mean gate weight when chosen; and an expert-load heatmap (layers × experts) as SVG.

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use serde::Serialize;

use trainer::host::ToHost;

/// Load of one MoE layer's routed experts.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RoutingStats {
    /// Fraction of the (token, slot) assignments that went to each expert (sums to 1).
    pub token_share: Vec<f64>,
    /// Mean gate weight of each expert over the assignments it received (0 when none).
    pub mean_gate: Vec<f64>,
    /// Assignments counted.
    pub assignments: usize,
}

impl RoutingStats {
    /// Statistics of top-k ids and weights `[tokens, k]` over `n_experts`; `token_mask`
    /// `[tokens]` (1 = count) leaves padding out.
    pub fn from_routing(
        idx: Tensor<2, Int>,
        weight: Tensor<2>,
        n_experts: usize,
        token_mask: Option<Tensor<1, Int>>,
    ) -> crate::Result<Self> {
        let [n, k] = idx.dims();
        let device = idx.device();
        let m = match token_mask {
            Some(m) => m.float().reshape([n, 1]).expand([n, k]),
            None => Tensor::<2>::ones([n, k], &device),
        };
        let counts = Tensor::<2>::zeros([n, n_experts], &device)
            .scatter(1, idx.clone(), m.clone(), IndexingUpdateOp::Add)
            .sum_dim(0); // [1, E]
        let sums = Tensor::<2>::zeros([n, n_experts], &device)
            .scatter(1, idx, weight * m, IndexingUpdateOp::Add)
            .sum_dim(0);
        let read = |t: Tensor<2>| -> crate::Result<Vec<f64>> {
            Ok(t.to_f32s()?.into_iter().map(f64::from).collect())
        };
        let counts = read(counts)?;
        let sums = read(sums)?;
        let total: f64 = counts.iter().sum();
        Ok(Self {
            token_share: counts.iter().map(|c| c / total.max(1.0)).collect(),
            mean_gate: counts
                .iter()
                .zip(&sums)
                .map(|(c, s)| if *c > 0.0 { s / c } else { 0.0 })
                .collect(),
            assignments: total.round() as usize,
        })
    }
}

/// A layers × experts heatmap of token shares as SVG (darker = more load), one row per layer.
pub fn load_heatmap_svg(title: &str, layers: &[(usize, RoutingStats)]) -> String {
    let cell = 12usize;
    let n_exp = layers
        .iter()
        .map(|(_, s)| s.token_share.len())
        .max()
        .unwrap_or(0);
    let (left, top) = (70usize, 40usize);
    let width = left + n_exp * cell + 20;
    let height = top + layers.len() * cell + 30;
    let max = layers
        .iter()
        .flat_map(|(_, s)| s.token_share.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{left}\" y=\"20\" font-family=\"sans-serif\" font-size=\"14\">{title}</text>"
    );
    for (row, (layer, s)) in layers.iter().enumerate() {
        let y = top + row * cell;
        svg.push_str(&format!(
            "<text x=\"5\" y=\"{}\" font-family=\"sans-serif\" font-size=\"10\">layer {layer}</text>",
            y + cell - 2
        ));
        for (e, share) in s.token_share.iter().enumerate() {
            let v = (255.0 * (1.0 - share / max)).round() as u8;
            svg.push_str(&format!(
                "<rect x=\"{}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({v},{v},255)\"><title>expert {e}: {:.4}</title></rect>",
                left + e * cell,
                share
            ));
        }
    }
    svg.push_str(&format!(
        "<text x=\"{left}\" y=\"{}\" font-family=\"sans-serif\" font-size=\"10\">expert → (max share {max:.4})</text></svg>",
        height - 10
    ));
    svg
}
