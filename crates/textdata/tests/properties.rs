//! Properties of the byte tokenizer, LM windows and the split.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use burn::prelude::*;
use proptest::prelude::*;
use textdata::{ByteTokenizer, LmWindows, split_every_kth};

proptest! {
    #[test]
    fn byte_tokenizer_round_trips_any_string(s in ".{0,200}") {
        prop_assert_eq!(ByteTokenizer.decode(&ByteTokenizer.encode(&s)), s);
    }

    #[test]
    fn every_window_is_its_input_shifted_by_one(
        n in 2usize..300, seq in 1usize..40, stride in 1usize..40
    ) {
        let tokens: Vec<u32> = (0..n as u32).collect();
        match LmWindows::new(tokens, seq, stride) {
            Err(_) => prop_assert!(n < seq + 1),
            Ok(w) => {
                let d = Device::flex();
                let idx: Vec<usize> = (0..w.len()).collect();
                let (x, y) = w.batch(&idx, &d).unwrap();
                let x = x.into_data().try_to_vec_as::<i64>().unwrap();
                let y = y.into_data().try_to_vec_as::<i64>().unwrap();
                for (a, b) in x.iter().zip(&y) {
                    prop_assert_eq!(a + 1, *b);
                }
                // The last window ends inside the stream and one more would not fit.
                let last_end = (w.len() - 1) * stride + seq;
                prop_assert!(last_end < n);
                prop_assert!(w.len() * stride + seq >= n);
            }
        }
    }

    #[test]
    fn split_partitions_the_items_in_order(n in 0usize..500, f in 0.0f64..0.6) {
        let items: Vec<usize> = (0..n).collect();
        let (t, v) = split_every_kth(&items, f);
        prop_assert_eq!(t.len() + v.len(), n);
        let mut all = t.clone();
        all.extend(&v);
        all.sort_unstable();
        prop_assert_eq!(all, items);
        prop_assert!(t.windows(2).all(|w| w[0] < w[1]));
        if n >= 2 && f > 0.0 {
            prop_assert!(!v.is_empty());
        }
    }
}
