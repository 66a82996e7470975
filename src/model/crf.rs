//! A linear-chain conditional random field over per-token emission scores, the NER decoder
//! of Lample et al. (2016) and of the XLNet-CRF / MTL-LS model (mtl-ls-hierarchical-ner).
//!
//! For a sequence of `n` tokens with emission scores `E ∈ R^{n×K}` (one row of tag scores
//! per token) and a tag path `y = y_1..y_n`, the path's score is (MTL-LS eq. 1, with the
//! rows `A_{y_0,·}` and `A_{·,y_{n+1}}` of the start and end tags kept as the vectors
//! `start` and `end`):
//!
//! ```text
//! s(E, y) = start[y_1] + Σ_{t=1}^{n} E[t, y_t] + Σ_{t=2}^{n} A[y_{t-1}, y_t] + end[y_n]
//! p(y | E) = exp s(E, y) / Z,        Z = Σ_{y'} exp s(E, y')
//! ```
//!
//! Training minimises `−log p(y | E) = log Z − s(E, y)`; decoding takes
//! `argmax_y s(E, y)` by the Viterbi algorithm.
//!
//! Batches hold `B` sequences padded to `T` positions; sequence `b` has `n_b ≥ 1` real
//! positions `0..n_b` and padding after them, which enters no score, no sum and no gradient.

use burn::module::{Module, Param};
use burn::tensor::{s, Bool, Device, Int, Tensor, TensorData};

use super::ModelError;

/// Added to the score of a transition that [`CrfConstraints::Bio`] forbids.
///
/// Not `-inf`: the stable logsumexp subtracts the maximum, and where every candidate were
/// `-inf` that is `-inf − (-inf)` = NaN, in the value and in the gradient; and a gold path
/// that breaks the scheme (a tagging error in the data) would get an infinite loss and NaN
/// gradients. −10⁴ still removes forbidden paths from `Z` (exp(−10⁴) underflows to exactly
/// 0 in f32), keeps every loss and gradient finite, and is representable in f16 (like
/// [`super::bert::MASK_BIAS`]).
pub const DISALLOWED_SCORE: f32 = -1.0e4;

/// Hard constraints on the tag sequences a CRF may score and decode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CrfConstraints {
    /// Every transition is allowed.
    #[default]
    None,
    /// IOB2 tags (`O`, `B-X`, `I-X`), one per tag index: `I-X` may only follow `B-X` or
    /// `I-X`, so `start → I-X`, `O → I-X` and `B-Y / I-Y → I-X` (Y ≠ X) are forbidden.
    Bio { tags: Vec<String> },
}

/// Which transitions a constraint scheme allows, for `K` tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedTransitions {
    /// `[K·K]`, row-major: entry `i·K + j` says whether tag `j` may follow tag `i`.
    transition: Vec<bool>,
    /// `[K]`: whether a sequence may begin with tag `j`.
    start: Vec<bool>,
}

/// One IOB2 tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Iob2<'a> {
    Outside,
    Begin(&'a str),
    Inside(&'a str),
}

impl<'a> Iob2<'a> {
    fn parse(tag: &'a str) -> Result<Self, ModelError> {
        let typed = |rest: &'a str| {
            if rest.is_empty() {
                Err(ModelError::Invalid(format!(
                    "IOB2 tag `{tag}` has no entity type"
                )))
            } else {
                Ok(rest)
            }
        };
        if tag == "O" {
            Ok(Iob2::Outside)
        } else if let Some(rest) = tag.strip_prefix("B-") {
            Ok(Iob2::Begin(typed(rest)?))
        } else if let Some(rest) = tag.strip_prefix("I-") {
            Ok(Iob2::Inside(typed(rest)?))
        } else {
            Err(ModelError::Invalid(format!(
                "`{tag}` is not an IOB2 tag (expected `O`, `B-<type>` or `I-<type>`)"
            )))
        }
    }
}

impl AllowedTransitions {
    /// The IOB2 scheme for `tags` (tag index = position in `tags`).
    pub fn bio(tags: &[String]) -> Result<Self, ModelError> {
        let parsed = tags
            .iter()
            .map(|t| Iob2::parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        // `I-X` continues an entity of type X: only `B-X` and `I-X` may precede it
        let may_follow = |prev: Option<Iob2>, next: Iob2| match next {
            Iob2::Outside | Iob2::Begin(_) => true,
            Iob2::Inside(x) => matches!(prev, Some(Iob2::Begin(y) | Iob2::Inside(y)) if y == x),
        };
        Ok(AllowedTransitions {
            transition: parsed
                .iter()
                .flat_map(|&i| parsed.iter().map(move |&j| may_follow(Some(i), j)))
                .collect(),
            start: parsed.iter().map(|&j| may_follow(None, j)).collect(),
        })
    }

    /// Number of tags `K`.
    pub fn num_tags(&self) -> usize {
        self.start.len()
    }

    /// Whether tag `j` may follow tag `i`.
    pub fn transition(&self, i: usize, j: usize) -> bool {
        self.transition[i * self.num_tags() + j]
    }

    /// Whether a sequence may begin with tag `j`.
    pub fn start(&self, j: usize) -> bool {
        self.start[j]
    }

    /// `[K, K]`: 0 where allowed, [`DISALLOWED_SCORE`] where not.
    fn transition_penalty(&self, device: &Device) -> Tensor<2> {
        let k = self.num_tags();
        Tensor::from_data(TensorData::new(penalty(&self.transition), [k, k]), device)
    }

    /// `[K]`: 0 where allowed, [`DISALLOWED_SCORE`] where not.
    fn start_penalty(&self, device: &Device) -> Tensor<1> {
        Tensor::from_data(
            TensorData::new(penalty(&self.start), [self.num_tags()]),
            device,
        )
    }
}

fn penalty(allowed: &[bool]) -> Vec<f32> {
    allowed
        .iter()
        .map(|&a| if a { 0.0 } else { DISALLOWED_SCORE })
        .collect()
}

/// A linear-chain CRF over `K` tags: transition scores `A`, start and end scores.
#[derive(Module, Debug)]
pub struct LinearChainCrf {
    /// `A ∈ R^{K×K}`: `A[i, j]` is the score of tag `j` following tag `i`.
    pub transitions: Param<Tensor<2>>,
    /// `start ∈ R^K`: the score of a sequence beginning with tag `j` (`A[y_0, ·]`).
    pub start: Param<Tensor<1>>,
    /// `end ∈ R^K`: the score of a sequence ending with tag `j` (`A[·, y_{n+1}]`).
    pub end: Param<Tensor<1>>,
    /// Transitions forbidden by the constraint scheme, if any (not learned, not saved).
    #[module(skip)]
    allowed: Option<AllowedTransitions>,
}

/// `log Σ exp x` along `dim` (kept as size 1), stable: `m + log Σ exp(x − m)`, `m = max x`.
///
/// `m` is detached: the result does not depend on the shift, so no gradient is lost.
fn log_sum_exp<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let m = x.clone().max_dim(dim).detach();
    (x - m.clone()).exp().sum_dim(dim).log() + m
}

/// `[B, K]` mask, true for the sequences that still have a real position at step `t`.
fn active_at(t: usize, lengths: &[usize], k: usize, device: &Device) -> Tensor<2, Bool> {
    let values: Vec<bool> = lengths
        .iter()
        .flat_map(|&n| std::iter::repeat_n(t < n, k))
        .collect();
    Tensor::from_data(TensorData::new(values, [lengths.len(), k]), device)
}

impl LinearChainCrf {
    /// A CRF over `num_tags` tags with `A = 0`, `start = 0`, `end = 0` and no constraints.
    ///
    /// Zero, not random: unlike hidden units, CRF scores need no symmetry breaking (the
    /// gradient of the loss at 0 is the empirical minus the expected transition counts,
    /// already different per entry), the initial model is the per-token softmax over the
    /// emissions, and the constructor draws nothing from the backend's shared generator,
    /// so adding a CRF shifts no seeded initialisation or dropout stream.
    pub fn new(num_tags: usize, device: &Device) -> Self {
        LinearChainCrf {
            transitions: Param::from_tensor(Tensor::zeros([num_tags, num_tags], device)),
            start: Param::from_tensor(Tensor::zeros([num_tags], device)),
            end: Param::from_tensor(Tensor::zeros([num_tags], device)),
            allowed: None,
        }
    }

    /// The same CRF under `constraints`: every forbidden transition's score gets
    /// [`DISALLOWED_SCORE`] added in [`Self::log_partition`] and [`Self::score`], and
    /// [`Self::viterbi`] never takes one.
    pub fn with_constraints(mut self, constraints: CrfConstraints) -> Result<Self, ModelError> {
        self.allowed = match constraints {
            CrfConstraints::None => None,
            CrfConstraints::Bio { tags } => {
                if tags.len() != self.num_tags() {
                    return Err(ModelError::Invalid(format!(
                        "BIO constraints name {} tags for a CRF over {}",
                        tags.len(),
                        self.num_tags()
                    )));
                }
                Some(AllowedTransitions::bio(&tags)?)
            }
        };
        Ok(self)
    }

    /// Number of tags `K`.
    pub fn num_tags(&self) -> usize {
        self.start.dims()[0]
    }

    /// The constraint scheme's allowed transitions, if any.
    pub fn allowed(&self) -> Option<&AllowedTransitions> {
        self.allowed.as_ref()
    }

    /// `A` plus the constraint penalty, `[K, K]`.
    fn transition_scores(&self) -> Tensor<2> {
        let a = self.transitions.val();
        match &self.allowed {
            Some(allowed) => {
                let device = a.device();
                a + allowed.transition_penalty(&device)
            }
            None => a,
        }
    }

    /// `start` plus the constraint penalty, `[K]`.
    fn start_scores(&self) -> Tensor<1> {
        let start = self.start.val();
        match &self.allowed {
            Some(allowed) => {
                let device = start.device();
                start + allowed.start_penalty(&device)
            }
            None => start,
        }
    }

    /// Checks `emissions: [B, T, K]` against `lengths`; returns `[B, T, K, max_b n_b]`.
    fn check_batch(&self, emissions: &Tensor<3>, lengths: &[usize]) -> [usize; 4] {
        let [batch, steps, k] = emissions.dims();
        assert_eq!(
            k,
            self.num_tags(),
            "emissions have {k} tags, the CRF {}",
            self.num_tags()
        );
        assert_eq!(lengths.len(), batch, "one length per sequence");
        assert!(
            lengths.iter().all(|&n| (1..=steps).contains(&n)),
            "lengths {lengths:?} must lie in 1..={steps}"
        );
        let longest = lengths.iter().copied().max().unwrap_or(0);
        [batch, steps, k, longest]
    }

    /// `log Z_b` for every sequence, `[B]`, by the forward algorithm in log space:
    ///
    /// ```text
    /// α_1(j) = start[j] + E[1, j]
    /// α_t(j) = E[t, j] + logsumexp_i (α_{t-1}(i) + A[i, j])      t = 2..n
    /// log Z  = logsumexp_j (α_n(j) + end[j])
    ///        = log Σ_y exp s(E, y)
    /// ```
    ///
    /// At padded steps (`t > n_b`) `α_t = α_{t-1}`, so padding leaves `log Z_b` and every
    /// gradient untouched. Built from differentiable tensor ops: under autodiff the result
    /// has gradients with respect to `emissions`, `A`, `start` and `end`.
    ///
    /// # Panics
    /// If `emissions` is not `[B, T, K]` with `lengths.len() = B` and every `n_b` in `1..=T`.
    pub fn log_partition(&self, emissions: Tensor<3>, lengths: &[usize]) -> Tensor<1> {
        let [batch, _, k, longest] = self.check_batch(&emissions, lengths);
        let device = emissions.device();
        let emission_at = |t: usize| -> Tensor<2> {
            emissions
                .clone()
                .slice(s![.., t..t + 1, ..])
                .reshape([batch, k])
        };
        // [1, K, K], broadcast over the batch
        let a: Tensor<3> = self.transition_scores().unsqueeze_dim(0);
        let mut alpha = self.start_scores().unsqueeze_dim::<2>(0) + emission_at(0);
        for t in 1..longest {
            // α_{t-1}(i) + A[i, j]: [B, K (i), K (j)]
            let through: Tensor<3> = alpha.clone().unsqueeze_dim::<3>(2) + a.clone();
            let next = log_sum_exp(through, 1).reshape([batch, k]) + emission_at(t);
            alpha = alpha.mask_where(active_at(t, lengths, k, &device), next);
        }
        let last = alpha + self.end.val().unsqueeze_dim::<2>(0);
        log_sum_exp(last, 1).reshape([batch])
    }

    /// `s(E_b, y_b)` for every sequence, `[B]`: the unnormalised score of the tag paths
    /// `tags` (of which the first `n_b` entries of `tags[b]` are read),
    ///
    /// ```text
    /// s(E, y) = start[y_1] + Σ_{t=1}^{n} E[t, y_t] + Σ_{t=2}^{n} A[y_{t-1}, y_t] + end[y_n]
    /// ```
    ///
    /// with [`DISALLOWED_SCORE`] added per forbidden transition under constraints.
    ///
    /// # Panics
    /// As [`Self::log_partition`]; also if `tags.len() ≠ B`, some `tags[b]` is shorter than
    /// `n_b`, or a tag is not below `K`.
    pub fn score(&self, emissions: Tensor<3>, tags: &[Vec<usize>], lengths: &[usize]) -> Tensor<1> {
        let [batch, _, k, longest] = self.check_batch(&emissions, lengths);
        assert_eq!(tags.len(), batch, "one tag path per sequence");
        for (path, &n) in tags.iter().zip(lengths) {
            assert!(
                path.len() >= n,
                "tag path {path:?} is shorter than its length {n}"
            );
            assert!(
                path[..n].iter().all(|&y| y < k),
                "tag path {path:?}: tags must be below {k}"
            );
        }
        let device = emissions.device();
        let padding = |width: usize, offset: usize| -> Tensor<2, Bool> {
            let values: Vec<bool> = lengths
                .iter()
                .flat_map(|&n| (0..width).map(move |t| t + offset >= n))
                .collect();
            Tensor::from_data(TensorData::new(values, [batch, width]), &device)
        };
        let int_tensor = |values: Vec<i64>, shape: [usize; 1]| -> Tensor<1, Int> {
            Tensor::from_data(TensorData::new(values, shape), &device)
        };

        // Σ_t E[t, y_t]: gather y_t from each row, padding (tag 0 there) masked to 0
        let index: Vec<i64> = tags
            .iter()
            .zip(lengths)
            .flat_map(|(path, &n)| {
                (0..longest).map(move |t| if t < n { path[t] as i64 } else { 0 })
            })
            .collect();
        let index =
            Tensor::<3, Int>::from_data(TensorData::new(index, [batch, longest, 1]), &device);
        let emitted = emissions
            .slice(s![.., 0..longest, ..])
            .gather(2, index)
            .reshape([batch, longest])
            .mask_fill(padding(longest, 0), 0.0)
            .sum_dim(1)
            .reshape([batch]);

        // start[y_1] + end[y_n]
        let first = tags.iter().map(|path| path[0] as i64).collect();
        let last = tags
            .iter()
            .zip(lengths)
            .map(|(path, &n)| path[n - 1] as i64)
            .collect();
        let mut total = emitted
            + self.start_scores().select(0, int_tensor(first, [batch]))
            + self.end.val().select(0, int_tensor(last, [batch]));

        // Σ_{t≥2} A[y_{t-1}, y_t]: entry i·K + j of the flattened A, padding masked to 0
        if longest > 1 {
            let steps = longest - 1;
            let index: Vec<i64> = tags
                .iter()
                .zip(lengths)
                .flat_map(|(path, &n)| {
                    (1..longest).map(move |t| {
                        if t < n {
                            (path[t - 1] * k + path[t]) as i64
                        } else {
                            0
                        }
                    })
                })
                .collect();
            let moved = self
                .transition_scores()
                .reshape([k * k])
                .select(0, int_tensor(index, [batch * steps]))
                .reshape([batch, steps])
                .mask_fill(padding(steps, 1), 0.0)
                .sum_dim(1)
                .reshape([batch]);
            total = total + moved;
        }
        total
    }

    /// The training loss: `(1/B) Σ_b (log Z_b − s(E_b, y_b))`, the mean negative
    /// log-likelihood of the gold paths, shape `[1]`.
    ///
    /// # Panics
    /// As [`Self::score`].
    pub fn neg_log_likelihood(
        &self,
        emissions: Tensor<3>,
        tags: &[Vec<usize>],
        lengths: &[usize],
    ) -> Tensor<1> {
        let log_z = self.log_partition(emissions.clone(), lengths);
        (log_z - self.score(emissions, tags, lengths)).mean()
    }

    /// The best path `argmax_y s(E_b, y)` of every sequence (of length `n_b`), by the
    /// Viterbi algorithm on the CPU from the tensors' f32 values (summed in f64):
    ///
    /// ```text
    /// δ_1(j) = start[j] + E[1, j]
    /// δ_t(j) = E[t, j] + max_i (δ_{t-1}(i) + A[i, j]),   ψ_t(j) = that argmax i
    /// y_n = argmax_j (δ_n(j) + end[j]),                   y_{t-1} = ψ_t(y_t)
    /// ```
    ///
    /// Ties go to the lowest tag index (at each `ψ_t` and at `y_n`). Under constraints the
    /// forbidden transitions are excluded outright, so a returned path never contains one.
    ///
    /// # Panics
    /// As [`Self::log_partition`].
    pub fn viterbi(&self, emissions: Tensor<3>, lengths: &[usize]) -> Vec<Vec<usize>> {
        let [_, steps, k, _] = self.check_batch(&emissions, lengths);
        let read = |data: TensorData| -> Vec<f64> { data.iter::<f32>().map(f64::from).collect() };
        let e = read(emissions.into_data());
        let a = read(self.transitions.val().into_data());
        let start = read(self.start.val().into_data());
        let end = read(self.end.val().into_data());
        let allowed = self.allowed.as_ref();
        let may_start = |j: usize| allowed.is_none_or(|c| c.start(j));
        let may_follow = |i: usize, j: usize| allowed.is_none_or(|c| c.transition(i, j));

        lengths
            .iter()
            .enumerate()
            .map(|(b, &n)| {
                let row = |t: usize| &e[(b * steps + t) * k..(b * steps + t + 1) * k];
                let mut delta: Vec<f64> = (0..k)
                    .map(|j| {
                        if may_start(j) {
                            start[j] + row(0)[j]
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                // ψ_t(j) for t = 2..n
                let mut back: Vec<Vec<usize>> = Vec::with_capacity(n.saturating_sub(1));
                for t in 1..n {
                    let mut psi = vec![0; k];
                    let next: Vec<f64> = (0..k)
                        .map(|j| {
                            let mut best = (f64::NEG_INFINITY, 0);
                            for i in (0..k).filter(|&i| may_follow(i, j)) {
                                let through = delta[i] + a[i * k + j];
                                if through > best.0 {
                                    best = (through, i);
                                }
                            }
                            psi[j] = best.1;
                            best.0 + row(t)[j]
                        })
                        .collect();
                    back.push(psi);
                    delta = next;
                }
                let mut best = (f64::NEG_INFINITY, 0);
                for (j, d) in delta.iter().enumerate() {
                    if d + end[j] > best.0 {
                        best = (d + end[j], j);
                    }
                }
                let mut path = vec![best.1];
                for psi in back.iter().rev() {
                    let y = psi[path[path.len() - 1]];
                    path.push(y);
                }
                path.reverse();
                path
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::rng::SplitMix64;

    /// Tolerance on log Z, scores, the NLL and Viterbi scores (absolute).
    const TOLERANCE: f64 = 1e-5;
    /// Tolerance on gradients (each of magnitude ≤ 1) against central differences.
    const GRAD_TOLERANCE: f64 = 1e-4;

    /// Uniform in `[-scale, scale)`.
    fn uniform(rng: &mut SplitMix64, scale: f64) -> f32 {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (scale * (2.0 * u - 1.0)) as f32
    }

    /// One random batch: emissions `[B, T, K]` (padding filled with huge values that would
    /// show up anywhere they leak), parameters, and a gold path per sequence.
    #[derive(Debug, Clone)]
    struct Case {
        k: usize,
        steps: usize,
        lengths: Vec<usize>,
        e: Vec<f64>,
        a: Vec<f64>,
        start: Vec<f64>,
        end: Vec<f64>,
        allowed: Option<AllowedTransitions>,
        tags: Option<Vec<String>>,
        gold: Vec<Vec<usize>>,
    }

    impl Case {
        /// `B` in 1..=4, `n_b` in 1..=`max_len`, `K` in 2..=`max_k` (or the number of `tags`).
        fn random(
            rng: &mut SplitMix64,
            tags: Option<&[&str]>,
            max_k: usize,
            max_len: usize,
        ) -> Case {
            let tags: Option<Vec<String>> = tags.map(|t| t.iter().map(|s| s.to_string()).collect());
            let k = tags.as_ref().map_or(2 + rng.below(max_k - 1), Vec::len);
            let batch = 1 + rng.below(4);
            let lengths: Vec<usize> = (0..batch).map(|_| 1 + rng.below(max_len)).collect();
            let steps = lengths.iter().copied().max().unwrap_or(1) + rng.below(2);
            let mut e = Vec::with_capacity(batch * steps * k);
            for &n in &lengths {
                for t in 0..steps {
                    let scale = if t < n { 2.0 } else { 1e3 };
                    e.extend((0..k).map(|_| f64::from(uniform(rng, scale))));
                }
            }
            let mut draw = |n: usize| (0..n).map(|_| f64::from(uniform(rng, 1.0))).collect();
            let (a, start, end) = (draw(k * k), draw(k), draw(k));
            let allowed = tags.as_deref().map(|t| AllowedTransitions::bio(t).unwrap());
            let mut case = Case {
                k,
                steps,
                lengths,
                e,
                a,
                start,
                end,
                allowed,
                tags,
                gold: vec![],
            };
            case.gold = (0..batch)
                .map(|b| {
                    let paths = case.paths(b);
                    paths[rng.below(paths.len())].clone()
                })
                .collect();
            case
        }

        fn batch(&self) -> usize {
            self.lengths.len()
        }

        fn allowed_path(&self, path: &[usize]) -> bool {
            self.allowed.as_ref().is_none_or(|c| {
                c.start(path[0]) && path.windows(2).all(|w| c.transition(w[0], w[1]))
            })
        }

        /// Every allowed tag path of sequence `b`.
        fn paths(&self, b: usize) -> Vec<Vec<usize>> {
            let n = self.lengths[b];
            (0..self.k.pow(n as u32))
                .map(|mut code| {
                    (0..n)
                        .map(|_| {
                            let y = code % self.k;
                            code /= self.k;
                            y
                        })
                        .collect::<Vec<usize>>()
                })
                .filter(|path| self.allowed_path(path))
                .collect()
        }

        /// `s(E_b, y)` in f64, straight from the definition.
        fn path_score(&self, b: usize, path: &[usize]) -> f64 {
            let (k, n) = (self.k, path.len());
            let emission = |t: usize| self.e[(b * self.steps + t) * k + path[t]];
            self.start[path[0]]
                + (0..n).map(emission).sum::<f64>()
                + path
                    .windows(2)
                    .map(|w| self.a[w[0] * k + w[1]])
                    .sum::<f64>()
                + self.end[path[n - 1]]
        }

        /// `log Σ_y exp s(E_b, y)` over the allowed paths, in f64.
        fn log_z(&self, b: usize) -> f64 {
            let scores: Vec<f64> = self
                .paths(b)
                .iter()
                .map(|p| self.path_score(b, p))
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            m + scores.iter().map(|s| (s - m).exp()).sum::<f64>().ln()
        }

        fn nll(&self) -> f64 {
            (0..self.batch())
                .map(|b| self.log_z(b) - self.path_score(b, &self.gold[b]))
                .sum::<f64>()
                / self.batch() as f64
        }

        fn crf(&self, device: &Device) -> LinearChainCrf {
            let k = self.k;
            let tensor = |values: &[f64], shape: Vec<usize>| {
                let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                TensorData::new(values, shape)
            };
            let mut crf = LinearChainCrf::new(k, device);
            crf.transitions =
                Param::from_tensor(Tensor::from_data(tensor(&self.a, vec![k, k]), device));
            crf.start = Param::from_tensor(Tensor::from_data(tensor(&self.start, vec![k]), device));
            crf.end = Param::from_tensor(Tensor::from_data(tensor(&self.end, vec![k]), device));
            let constraints = match &self.tags {
                Some(tags) => CrfConstraints::Bio { tags: tags.clone() },
                None => CrfConstraints::None,
            };
            crf.with_constraints(constraints).unwrap()
        }

        fn emissions(&self, device: &Device) -> Tensor<3> {
            let values: Vec<f32> = self.e.iter().map(|&v| v as f32).collect();
            Tensor::from_data(
                TensorData::new(values, [self.batch(), self.steps, self.k]),
                device,
            )
        }
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data().iter::<f32>().map(f64::from).collect()
    }

    /// Largest absolute differences seen over a run: log Z, path score, NLL, Viterbi score.
    #[derive(Debug, Default)]
    struct Worst {
        log_z: f64,
        score: f64,
        nll: f64,
        viterbi: f64,
        sequences: usize,
    }

    /// Checks every function against enumeration of all (allowed) paths.
    fn check_against_brute_force(case: &Case, worst: &mut Worst) {
        let device = Device::flex();
        let crf = case.crf(&device);
        let what = format!("{case:?}");
        let log_z = values(crf.log_partition(case.emissions(&device), &case.lengths));
        let score = values(crf.score(case.emissions(&device), &case.gold, &case.lengths));
        let nll =
            values(crf.neg_log_likelihood(case.emissions(&device), &case.gold, &case.lengths));
        let best = crf.viterbi(case.emissions(&device), &case.lengths);
        assert_eq!(nll.len(), 1);
        let nll_diff = (nll[0] - case.nll()).abs();
        assert!(
            nll_diff <= TOLERANCE,
            "NLL {} vs {}: {what}",
            nll[0],
            case.nll()
        );
        worst.nll = worst.nll.max(nll_diff);
        for b in 0..case.batch() {
            let brute_z = case.log_z(b);
            let diff = (log_z[b] - brute_z).abs();
            assert!(
                diff <= TOLERANCE,
                "log Z[{b}] {} vs {brute_z}: {what}",
                log_z[b]
            );
            worst.log_z = worst.log_z.max(diff);

            let brute_score = case.path_score(b, &case.gold[b]);
            let diff = (score[b] - brute_score).abs();
            assert!(
                diff <= TOLERANCE,
                "score[{b}] {} vs {brute_score}: {what}",
                score[b]
            );
            worst.score = worst.score.max(diff);

            let path = &best[b];
            assert_eq!(path.len(), case.lengths[b], "Viterbi path length: {what}");
            assert!(path.iter().all(|&y| y < case.k));
            assert!(
                case.allowed_path(path),
                "Viterbi path {path:?} is not allowed: {what}"
            );
            let best_brute = case
                .paths(b)
                .iter()
                .map(|p| (case.path_score(b, p), p.clone()))
                .fold(
                    (f64::NEG_INFINITY, vec![]),
                    |m, x| if x.0 > m.0 { x } else { m },
                );
            let diff = (case.path_score(b, path) - best_brute.0).abs();
            assert!(
                path == &best_brute.1 || diff <= TOLERANCE,
                "Viterbi {path:?} vs {:?}: {what}",
                best_brute.1
            );
            worst.viterbi = worst.viterbi.max(diff);
            worst.sequences += 1;
        }
    }

    #[test]
    fn matches_brute_force_on_random_padded_batches() {
        let mut rng = SplitMix64::new(2016);
        let mut worst = Worst::default();
        for _ in 0..200 {
            check_against_brute_force(&Case::random(&mut rng, None, 5, 6), &mut worst);
        }
        println!("unconstrained, 200 batches: {worst:?}");
    }

    #[test]
    fn matches_brute_force_over_allowed_paths_under_bio_constraints() {
        let tag_sets: [&[&str]; 3] = [
            &["O", "B-A", "I-A"],
            &["O", "B-A", "I-A", "B-B", "I-B"],
            &["I-A", "B-B", "O", "I-B", "B-A"],
        ];
        let mut rng = SplitMix64::new(2022);
        let mut worst = Worst::default();
        for case in 0..120 {
            let tags = tag_sets[case % tag_sets.len()];
            check_against_brute_force(&Case::random(&mut rng, Some(tags), 5, 6), &mut worst);
        }
        println!("BIO, 120 batches: {worst:?}");
    }

    /// Central differences of the f64 brute-force NLL with respect to every value of `field`.
    fn numeric_gradient(case: &Case, field: fn(&mut Case) -> &mut Vec<f64>) -> Vec<f64> {
        let h = 1e-5;
        let mut case = case.clone();
        (0..field(&mut case).len())
            .map(|i| {
                let x = field(&mut case)[i];
                field(&mut case)[i] = x + h;
                let up = case.nll();
                field(&mut case)[i] = x - h;
                let down = case.nll();
                field(&mut case)[i] = x;
                (up - down) / (2.0 * h)
            })
            .collect()
    }

    #[test]
    fn gradients_match_central_differences() {
        let mut rng = SplitMix64::new(1989);
        let device = Device::flex().autodiff();
        let mut worst: f64 = 0.0;
        // small enough for 2 brute-force passes per parameter
        for tags in [None, None, None, Some(&["O", "B-A", "I-A"][..])] {
            let case = Case::random(&mut rng, tags, 3, 4);
            let crf = case.crf(&device);
            let emissions = case.emissions(&device).require_grad();
            let loss = crf.neg_log_likelihood(emissions.clone(), &case.gold, &case.lengths);
            let grads = loss.backward();
            let analytic = [
                ("emissions", values(emissions.grad(&grads).unwrap())),
                ("transitions", values(crf.transitions.grad(&grads).unwrap())),
                ("start", values(crf.start.grad(&grads).unwrap())),
                ("end", values(crf.end.grad(&grads).unwrap())),
            ];
            let numeric = [
                numeric_gradient(&case, |c| &mut c.e),
                numeric_gradient(&case, |c| &mut c.a),
                numeric_gradient(&case, |c| &mut c.start),
                numeric_gradient(&case, |c| &mut c.end),
            ];
            for ((name, got), want) in analytic.iter().zip(&numeric) {
                assert_eq!(got.len(), want.len(), "{name}");
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (g - w).abs() <= GRAD_TOLERANCE,
                        "d/d{name}[{i}]: {g} vs {w}: {case:?}"
                    );
                    worst = worst.max((g - w).abs());
                }
                // the loss must actually depend on this parameter somewhere
                assert!(want.iter().any(|w| w.abs() > 1e-3), "{name}: {want:?}");
            }
            // padded emissions get exactly zero gradient
            let de = &analytic[0].1;
            for (b, &n) in case.lengths.iter().enumerate() {
                for t in n..case.steps {
                    let row = &de[(b * case.steps + t) * case.k..][..case.k];
                    assert!(
                        row.iter().all(|&g| g == 0.0),
                        "padding b={b} t={t}: {row:?}"
                    );
                }
            }
        }
        println!("max |autodiff − central difference| = {worst:e}");
    }

    #[test]
    fn bio_scheme_allows_exactly_the_iob2_transitions() {
        let tags: Vec<String> = ["O", "B-A", "I-A", "B-B", "I-B"].map(String::from).into();
        let allowed = AllowedTransitions::bio(&tags).unwrap();
        // rows: from O, B-A, I-A, B-B, I-B; columns: to the same
        let expected = [
            [true, true, false, true, false],
            [true, true, true, true, false],
            [true, true, true, true, false],
            [true, true, false, true, true],
            [true, true, false, true, true],
        ];
        for (i, row) in expected.iter().enumerate() {
            for (j, &want) in row.iter().enumerate() {
                assert_eq!(allowed.transition(i, j), want, "{} → {}", tags[i], tags[j]);
            }
        }
        let starts: Vec<bool> = (0..5).map(|j| allowed.start(j)).collect();
        assert_eq!(starts, [true, true, false, true, false]);
    }

    #[test]
    fn bio_constraints_reject_malformed_tags() {
        let device = Device::flex();
        let bio = |tags: &[&str]| CrfConstraints::Bio {
            tags: tags.iter().map(|t| t.to_string()).collect(),
        };
        for tags in [
            &["O", "B-A"][..],
            &["O", "B-A", "X-A"],
            &["O", "B-", "I-A"],
            &["O", "b-A", "I-A"],
        ] {
            let result = LinearChainCrf::new(3, &device).with_constraints(bio(tags));
            assert!(result.is_err(), "{tags:?} accepted");
        }
        let crf = LinearChainCrf::new(3, &device).with_constraints(bio(&["O", "B-A", "I-A"]));
        assert!(crf.is_ok_and(|c| c.allowed().is_some()));
    }

    #[test]
    fn viterbi_breaks_ties_towards_the_lowest_tag() {
        let device = Device::flex();
        let crf = LinearChainCrf::new(3, &device);
        // all scores zero: every path ties
        let emissions = Tensor::<3>::zeros([2, 4, 3], &device);
        assert_eq!(
            crf.viterbi(emissions, &[4, 2]),
            vec![vec![0; 4], vec![0; 2]]
        );
        // under BIO, tag 0 = I-A may never start: the lowest allowed start is tag 1
        let crf = crf
            .with_constraints(CrfConstraints::Bio {
                tags: ["I-A", "B-A", "O"].map(String::from).into(),
            })
            .unwrap();
        let emissions = Tensor::<3>::zeros([1, 3, 3], &device);
        assert_eq!(crf.viterbi(emissions, &[3]), vec![vec![1, 0, 0]]);
    }
}
