//! Sorting through one instantiation of the standard library's sort.
//!
//! Every element type sorted with `sort`/`sort_by` instantiates the whole stable sort, about
//! 3.5 kB of wasm each; the browser engine sorted four types. Here the sort runs once, on a
//! permutation of indices with the comparison behind `dyn`, and the permutation is then applied in
//! place, so every type shares that one instantiation (issue 8's download budget). The order is
//! the standard library's: stable, by the same comparator.

use std::cmp::Ordering;

/// The indices of `len` items in sorted order; non-generic, so compiled once.
fn sorted_order(len: usize, compare: &mut dyn FnMut(usize, usize) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    // The one instantiation the engine keeps (clippy.toml disallows the others).
    #[allow(clippy::disallowed_methods)]
    order.sort_by(|&a, &b| compare(a, b));
    order
}

/// Stable sort by `compare`, like `slice::sort_by`.
pub fn sort_by<T>(items: &mut [T], mut compare: impl FnMut(&T, &T) -> Ordering) {
    if items.len() < 2 {
        return;
    }
    let mut order = {
        let items = &*items;
        sorted_order(items.len(), &mut |a, b| compare(&items[a], &items[b]))
    };
    // Position j must end up holding the item now at order[j]. Follow each cycle of the
    // permutation with swaps, marking a position done by making it point at itself.
    for start in 0..order.len() {
        let mut j = start;
        while order[j] != start {
            let k = order[j];
            items.swap(j, k);
            order[j] = j;
            j = k;
        }
        order[j] = j;
    }
}

/// Stable sort by a key, like `slice::sort_by_key`.
#[cfg_attr(not(feature = "idb"), allow(dead_code))] // the IndexedDB backend's
pub fn sort_by_key<T, K: Ord>(items: &mut [T], mut key: impl FnMut(&T) -> K) {
    sort_by(items, |a, b| key(a).cmp(&key(b)));
}

/// Stable sort in the type's order, like `slice::sort`.
pub fn sort<T: Ord>(items: &mut [T]) {
    sort_by(items, T::cmp);
}

#[cfg(all(test, not(target_arch = "wasm32")))]
#[allow(clippy::disallowed_methods)] // the standard library's sort is the reference
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Same result as the standard library's stable sort, ties included: the pairs compare
        /// by their first element only, so a different order of equal keys would show.
        #[test]
        fn matches_std_stable_sort(items in proptest::collection::vec((0u8..8, any::<u32>()), 0..200)) {
            let mut ours = items.clone();
            sort_by(&mut ours, |a, b| a.0.cmp(&b.0));
            let mut std_sorted = items;
            std_sorted.sort_by_key(|a| a.0);
            prop_assert_eq!(ours, std_sorted);
        }

        /// Keys compare, ties keep their order, as with `slice::sort_by_key`.
        #[test]
        fn sort_by_key_matches_std(items in proptest::collection::vec((0u8..8, any::<u32>()), 0..200)) {
            let mut ours = items.clone();
            sort_by_key(&mut ours, |a| a.0);
            let mut std_sorted = items;
            std_sorted.sort_by_key(|a| a.0);
            prop_assert_eq!(ours, std_sorted);
        }

        #[test]
        fn sorts_strings(items in proptest::collection::vec(".{0,6}", 0..100)) {
            let mut ours = items.clone();
            sort(&mut ours);
            let mut std_sorted = items;
            std_sorted.sort();
            prop_assert_eq!(ours, std_sorted);
        }
    }
}
