//! The ring of a round-robin VIP: an interleaved weighted sequence (nginx's smooth weighted
//! round robin), which the datapath walks with a per-VIP position. A backend of weight w
//! appears w times in every period of `sum(w)` slots, spread out rather than in runs.

/// `size` slots of backend indices (into `weights`); `None` when no weight is positive.
pub fn build_table(weights: &[u32], size: u32) -> Option<Vec<u32>> {
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    if total == 0 {
        return None;
    }
    let mut current = vec![0i64; weights.len()];
    let mut table = Vec::with_capacity(size as usize);
    for _ in 0..size {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        table.push(best as u32);
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_period_gives_every_backend_its_weight_interleaved() {
        let table = build_table(&[1, 2, 3], 12).unwrap();
        for period in table.chunks(6) {
            let count = |i| period.iter().filter(|&&b| b == i).count();
            assert_eq!((count(0), count(1), count(2)), (1, 2, 3), "{table:?}");
        }
        // Smooth: the heaviest never takes three slots in a row.
        assert!(
            !table.windows(3).any(|w| w.iter().all(|&b| b == 2)),
            "{table:?}"
        );
    }

    #[test]
    fn equal_weights_alternate_and_zero_weights_get_nothing() {
        assert_eq!(build_table(&[1, 0, 1], 6).unwrap(), [0, 2, 0, 2, 0, 2]);
        assert_eq!(build_table(&[0, 0], 4), None);
    }
}
