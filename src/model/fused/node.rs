//! One autodiff node with a hand-written backward pass: what every fused kernel and one-node
//! form ends with, on any backend.

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, NodeGuard, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend};

/// `out` as the output of `op` over `parents`: a node that keeps `state` for `op`'s backward
/// pass when a parent needs a gradient, a plain tensor (and `state` dropped) otherwise.
pub(super) fn with_backward<B: Backend, O: Backward<B, N>, const N: usize>(
    op: O,
    parents: [NodeGuard; N],
    state: O::State,
    out: FloatTensor<B>,
) -> FloatTensor<Autodiff<B>> {
    match op
        .prepare::<NoCheckpointing>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
