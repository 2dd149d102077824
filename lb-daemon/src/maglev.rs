//! Weighted Maglev lookup tables (Eisenbud et al., NSDI 2016), built by the daemon and only
//! read by the datapath.
//!
//! Each backend walks its own permutation of the table's slots, derived from its address
//! alone, so two directors with the same backends build the same table, and removing a
//! backend only frees its own slots. Weights are honoured by letting a backend take a turn
//! in a round only once its accumulated credit allows it (the scheme Envoy uses), so a
//! backend of weight 2 claims twice as many slots as one of weight 1.

use lb_common::hash::mix64;

/// One backend as the table builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Stable identity the permutation is derived from (the backend's address as a number).
    pub key: u128,
    /// Relative share of slots; 0 takes none (drain).
    pub weight: u32,
}

const OFFSET_SEED: u64 = 0x2545_f491_4f6c_dd1d;
const SKIP_SEED: u64 = 0x5851_f42d_4c95_7f2d;

/// A key's permutation parameter under `seed`: every bit of the key counts (an IPv6
/// address's halves are not folded together, which would let distinct addresses share a
/// permutation); a key below 2^64 (an IPv4 address) gets what it always had.
fn spread(key: u128, seed: u64) -> u64 {
    mix64(key as u64 ^ seed ^ mix64((key >> 64) as u64))
}

/// Builds a table of `size` slots (`size` must be prime). Each slot holds an index into
/// `backends`. Returns `None` when no backend has a positive weight.
pub fn build_table(backends: &[MaglevBackend], size: u32) -> Option<Vec<u32>> {
    let size = size as u64;
    let max_weight = backends.iter().map(|b| b.weight as u64).max()?;
    if max_weight == 0 {
        return None;
    }
    const EMPTY: u32 = u32::MAX;
    let offsets: Vec<u64> = backends
        .iter()
        .map(|b| spread(b.key, OFFSET_SEED) % size)
        .collect();
    let skips: Vec<u64> = backends
        .iter()
        .map(|b| spread(b.key, SKIP_SEED) % (size - 1) + 1)
        .collect();
    let mut next = vec![0u64; backends.len()];
    let mut credit_used = vec![0u64; backends.len()];
    let mut table = vec![EMPTY; size as usize];
    let mut filled = 0u64;
    let mut round = 1u64;
    while filled < size {
        for (i, backend) in backends.iter().enumerate() {
            let weight = backend.weight as u64;
            // A backend of weight w takes a slot in about w of every max_weight rounds.
            if weight == 0 || round * weight < credit_used[i] {
                continue;
            }
            credit_used[i] += max_weight;
            loop {
                let slot = ((offsets[i] + next[i] * skips[i]) % size) as usize;
                next[i] += 1;
                if table[slot] == EMPTY {
                    table[slot] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == size {
                break;
            }
        }
        round += 1;
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = lb_common::RING_SIZE;

    fn backends(weights: &[u32]) -> Vec<MaglevBackend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| MaglevBackend {
                key: u32::from_be_bytes([198, 18, 1, i as u8 + 1]) as u128,
                weight,
            })
            .collect()
    }

    fn shares(table: &[u32], n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for &slot in table {
            counts[slot as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / table.len() as f64)
            .collect()
    }

    fn assert_balanced(weights: &[u32]) {
        let table = build_table(&backends(weights), M).expect("table");
        assert_eq!(table.len(), M as usize);
        let total: u32 = weights.iter().sum();
        for (i, share) in shares(&table, weights.len()).into_iter().enumerate() {
            let want = weights[i] as f64 / total as f64;
            assert!(
                (share - want).abs() <= 0.01 * want,
                "weights {weights:?}: backend {i} has {share:.5} of slots, want {want:.5} (within 1%)"
            );
        }
    }

    #[test]
    fn equal_weights_share_the_table_within_one_percent() {
        assert_balanced(&[1, 1, 1]);
        assert_balanced(&[1; 10]);
        assert_balanced(&[100; 7]);
    }

    #[test]
    fn unequal_weights_share_the_table_in_proportion_within_one_percent() {
        assert_balanced(&[1, 2, 3]);
        assert_balanced(&[5, 1]);
        assert_balanced(&[10, 20, 30, 40]);
    }

    #[test]
    fn zero_weight_backend_gets_no_slots() {
        let table = build_table(&backends(&[1, 0, 1]), M).unwrap();
        assert!(!table.contains(&1));
        assert_balanced(&[1, 1]);
    }

    #[test]
    fn no_positive_weight_gives_no_table() {
        assert_eq!(build_table(&backends(&[0, 0]), M), None);
        assert_eq!(build_table(&[], M), None);
    }

    #[test]
    fn same_backends_give_the_same_table() {
        assert_eq!(
            build_table(&backends(&[1, 2, 3]), M),
            build_table(&backends(&[1, 2, 3]), M)
        );
    }

    /// Removing one of N backends must remap its own ~1/N of slots and almost nothing else.
    #[test]
    fn removing_one_of_n_backends_remaps_about_one_nth() {
        for n in [3usize, 5, 10, 20] {
            let all = backends(&vec![1; n]);
            let before = build_table(&all, M).unwrap();
            for removed in [0, n / 2, n - 1] {
                let rest: Vec<MaglevBackend> = all
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != removed)
                    .map(|(_, b)| *b)
                    .collect();
                let after = build_table(&rest, M).unwrap();
                let moved = before
                    .iter()
                    .zip(&after)
                    .filter(|&(&b, &a)| all[b as usize].key != rest[a as usize].key)
                    .count();
                let fraction = moved as f64 / M as f64;
                let bound = 1.0 / n as f64 + 0.02;
                assert!(
                    fraction <= bound,
                    "n={n}, removed {removed}: {fraction:.4} of slots moved, bound {bound:.4}"
                );
                assert!(
                    fraction >= 1.0 / n as f64 * 0.95,
                    "n={n}: the removed backend's slots must move"
                );
            }
        }
    }
}
