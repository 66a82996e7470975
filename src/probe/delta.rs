//! The knowledge a layer adds (su2022 "Investigation of the knowledge in the last layer"):
//! `Δ^l = Score(P^l) − Score(P^{l−1})` on the test set, with Score the F1 of the task.

use serde::{Deserialize, Serialize};

/// `Δ^l` of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerDelta {
    /// l (≥ 1).
    pub layer: usize,
    /// `F1(P^l) − F1(P^{l−1})`, a fraction (−1..=1).
    pub delta_f1: f64,
}

/// `Δ^l` for every probed layer l ≥ 1 whose `P^{l−1}` was probed too, in layer order.
/// `f1` holds `(l, F1(P^l))` in any order.
pub fn knowledge_deltas(f1: &[(usize, f64)]) -> Vec<LayerDelta> {
    let score = |layer: usize| f1.iter().find(|(l, _)| *l == layer).map(|(_, s)| *s);
    let mut layers: Vec<usize> = f1.iter().map(|(l, _)| *l).filter(|&l| l >= 1).collect();
    layers.sort_unstable();
    layers.dedup();
    layers
        .into_iter()
        .filter_map(|l| {
            let (now, before) = (score(l)?, score(l - 1)?);
            Some(LayerDelta {
                layer: l,
                delta_f1: now - before,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_differences_of_consecutive_layers() {
        let f1 = [(2, 0.61), (0, 0.40), (1, 0.55), (4, 0.70)];
        let deltas = knowledge_deltas(&f1);
        let got: Vec<(usize, f64)> = deltas.iter().map(|d| (d.layer, d.delta_f1)).collect();
        assert_eq!(got.len(), 2, "Δ^4 needs P^3, which was not probed: {got:?}");
        assert_eq!(got[0].0, 1);
        assert!((got[0].1 - 0.15).abs() < 1e-12);
        assert_eq!(got[1].0, 2);
        assert!((got[1].1 - 0.06).abs() < 1e-12);
        assert!(knowledge_deltas(&[(0, 0.5)]).is_empty());
        let worse = knowledge_deltas(&[(5, 0.3), (6, 0.2)]);
        assert_eq!(worse.len(), 1);
        assert!(
            (worse[0].delta_f1 + 0.1).abs() < 1e-12,
            "a layer can lose F1"
        );
    }
}
