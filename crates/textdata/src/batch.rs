//! Batching: right-padding with attention masks, packing into fixed-length sequences, and
//! shuffled epochs drawn from the caller's RNG (the trainer's, so a resumed run sees the same
//! order).

use burn::prelude::*;

/// A right-padded batch.
#[derive(Debug)]
pub struct PaddedBatch {
    /// Token ids `[batch, seq]`.
    pub ids: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding `[batch, seq]`.
    pub mask: Tensor<2, Int>,
    /// Unpadded lengths.
    pub lengths: Vec<usize>,
}

/// Pads `seqs` on the right with `pad_id` to the longest (at most `max_len`; longer sequences
/// are cut to their first `max_len` tokens).
pub fn pad_batch(seqs: &[Vec<u32>], pad_id: u32, max_len: usize, device: &Device) -> PaddedBatch {
    let s = seqs
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .min(max_len)
        .max(1);
    let mut ids = Vec::with_capacity(seqs.len() * s);
    let mut mask = Vec::with_capacity(seqs.len() * s);
    let mut lengths = Vec::with_capacity(seqs.len());
    for q in seqs {
        let n = q.len().min(s);
        lengths.push(n);
        ids.extend(q[..n].iter().map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(pad_id as i64, s - n));
        mask.extend(std::iter::repeat_n(1i64, n));
        mask.extend(std::iter::repeat_n(0i64, s - n));
    }
    let shape = [seqs.len(), s];
    PaddedBatch {
        ids: Tensor::from_data(TensorData::new(ids, shape), device),
        mask: Tensor::from_data(TensorData::new(mask, shape), device),
        lengths,
    }
}

/// Concatenates `seqs` (with `sep` after each, when given) and cuts the stream into sequences of
/// exactly `len` tokens; the incomplete tail is dropped.
pub fn pack(seqs: &[Vec<u32>], len: usize, sep: Option<u32>) -> Vec<Vec<u32>> {
    if len == 0 {
        return Vec::new();
    }
    let mut stream = Vec::new();
    for q in seqs {
        stream.extend_from_slice(q);
        stream.extend(sep);
    }
    stream.chunks_exact(len).map(<[u32]>::to_vec).collect()
}

/// One epoch of batches over `n` items in an order drawn with `below(k)` (uniform in `0..k`,
/// e.g. `|k| rng.below(k)` with the trainer's RNG). The last, smaller batch is kept unless
/// `drop_last`.
pub fn epoch_batches(
    n: usize,
    batch: usize,
    drop_last: bool,
    mut below: impl FnMut(usize) -> usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, below(i + 1));
    }
    order
        .chunks(batch.max(1))
        .filter(|c| !drop_last || c.len() == batch)
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_marks_real_tokens_and_cuts_long_ones() {
        let d = Device::flex();
        let b = pad_batch(&[vec![5, 6, 7], vec![8], vec![1, 2, 3, 4, 5]], 0, 4, &d);
        assert_eq!(b.lengths, vec![3, 1, 4]);
        let ids = b.ids.into_data().try_to_vec_as::<i64>().unwrap();
        let mask = b.mask.into_data().try_to_vec_as::<i64>().unwrap();
        assert_eq!(ids, vec![5, 6, 7, 0, 8, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(mask, vec![1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1]);
    }

    #[test]
    fn packing_cuts_the_separated_stream() {
        let p = pack(&[vec![1, 2, 3], vec![4, 5]], 3, Some(0));
        assert_eq!(p, vec![vec![1, 2, 3], vec![0, 4, 5]]);
    }

    #[test]
    fn epochs_cover_every_item_once() {
        let mut x = 12345u64;
        let below = |k: usize| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as usize) % k
        };
        let b = epoch_batches(10, 4, false, below);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut all: Vec<usize> = b.concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(epoch_batches(10, 4, true, |_| 0).len(), 2);
    }
}
