//! Maximum spanning arborescence (Chu–Liu/Edmonds), the MST decoder of graph-based
//! dependency parsing (McDonald et al. 2005; Meng et al. 2019 at test time).
//!
//! Node 0 is the root; `score[h][d]` is the score of the arc `h → d` (head `h`, dependent
//! `d`). [`max_spanning_tree`] returns the head of every node (the root's is 0) of the
//! highest-scoring tree in which **exactly one** word hangs from the root: every root arc
//! is lowered by a constant larger than any difference of tree scores, so the optimum uses
//! as few root arcs as a tree can — one — and among those the best (the complete graph
//! always has such a tree).

/// The head of every node of the best single-root spanning tree over `score` (`n × n`,
/// node 0 the root; `score[d][d]` is ignored). `n ≤ 1` gives `[0]` or nothing.
pub fn max_spanning_tree(score: &[Vec<f64>]) -> Vec<usize> {
    let n = score.len();
    if n <= 1 {
        return vec![0; n];
    }
    let finite = score.iter().flatten().copied().filter(|s| s.is_finite());
    let (lo, hi) = finite.fold((0.0f64, 0.0f64), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let penalty = (hi - lo + 1.0) * n as f64;
    let mut s: Vec<Vec<f64>> = score.to_vec();
    for (h, row) in s.iter_mut().enumerate() {
        for (d, x) in row.iter_mut().enumerate() {
            if h == d || d == 0 {
                *x = f64::NEG_INFINITY;
            } else if h == 0 {
                *x -= penalty;
            }
        }
    }
    chu_liu_edmonds(&s)
}

/// Chu–Liu/Edmonds on a dense score matrix with node 0 as the root (arcs into 0 and
/// self-loops must be −∞): each node takes its best head; a cycle is contracted into one
/// node whose incoming arcs are scored by what they gain over the cycle arc they replace;
/// the contracted problem is solved and expanded back.
fn chu_liu_edmonds(s: &[Vec<f64>]) -> Vec<usize> {
    let n = s.len();
    let mut head = vec![0usize; n];
    for d in 1..n {
        head[d] = (0..n)
            .filter(|&h| h != d)
            .max_by(|&a, &b| s[a][d].total_cmp(&s[b][d]))
            .unwrap_or(0);
    }
    let Some(cycle) = find_cycle(&head) else {
        return head;
    };
    let in_cycle: Vec<bool> = (0..n).map(|v| cycle.contains(&v)).collect();
    // contracted graph: the nodes outside the cycle keep their order, the cycle is last
    let outside: Vec<usize> = (0..n).filter(|&v| !in_cycle[v]).collect();
    let c = outside.len();
    let m = c + 1;
    let mut t = vec![vec![f64::NEG_INFINITY; m]; m];
    // for an arc into the cycle: which cycle node it enters; out of it: which node leaves
    let mut enters = vec![0usize; m];
    let mut leaves = vec![0usize; m];
    for (i, &u) in outside.iter().enumerate() {
        for (j, &v) in outside.iter().enumerate() {
            t[i][j] = s[u][v];
        }
        // u → cycle: the best v ∈ C by s[u][v] − s[head[v]][v]
        for &v in &cycle {
            let gain = s[u][v] - s[head[v]][v];
            if gain > t[i][c] {
                t[i][c] = gain;
                enters[i] = v;
            }
        }
        // cycle → u: the best w ∈ C by s[w][u]
        for &w in &cycle {
            if s[w][u] > t[c][i] {
                t[c][i] = s[w][u];
                leaves[i] = w;
            }
        }
    }
    let sub = chu_liu_edmonds(&t);
    let mut out = head.clone();
    for (i, &v) in outside.iter().enumerate() {
        if i == 0 {
            continue; // the root
        }
        out[v] = if sub[i] == c {
            leaves[i]
        } else {
            outside[sub[i]]
        };
    }
    // the arc that enters the cycle breaks it at `enters`
    let from = sub[c];
    out[enters[from]] = outside[from];
    out
}

/// A cycle of the head pointers (node 0 excluded), if any.
fn find_cycle(head: &[usize]) -> Option<Vec<usize>> {
    let n = head.len();
    // 0 unvisited, 1 on the current path, 2 done
    let mut state = vec![0u8; n];
    state[0] = 2;
    for start in 1..n {
        let mut path = Vec::new();
        let mut v = start;
        while state[v] == 0 {
            state[v] = 1;
            path.push(v);
            v = head[v];
        }
        if state[v] == 1 {
            let at = path.iter().position(|&x| x == v).unwrap_or(0);
            return Some(path[at..].to_vec());
        }
        for p in path {
            state[p] = 2;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::rng::SplitMix64;

    fn tree_score(score: &[Vec<f64>], head: &[usize]) -> f64 {
        (1..head.len()).map(|d| score[head[d]][d]).sum()
    }

    /// Whether `head` is a tree over nodes 0..n with exactly one child of the root.
    fn is_single_root_tree(head: &[usize]) -> bool {
        let n = head.len();
        let roots = (1..n).filter(|&d| head[d] == 0).count();
        roots == 1
            && (1..n).all(|d| {
                let mut v = d;
                for _ in 0..n {
                    if v == 0 {
                        return true;
                    }
                    v = head[v];
                }
                v == 0
            })
    }

    /// The best score over all head assignments (brute force).
    fn brute_force(score: &[Vec<f64>]) -> f64 {
        let n = score.len();
        let mut best = f64::NEG_INFINITY;
        let mut head = vec![0usize; n];
        let total = n.pow((n - 1) as u32);
        for code in 0..total {
            let mut x = code;
            for h in head.iter_mut().skip(1) {
                *h = x % n;
                x /= n;
            }
            if (1..n).any(|d| head[d] == d) || !is_single_root_tree(&head) {
                continue;
            }
            best = best.max(tree_score(score, &head));
        }
        best
    }

    #[test]
    fn matches_brute_force_on_random_graphs() {
        let mut rng = SplitMix64::new(23);
        for trial in 0..300 {
            let n = 2 + trial % 5; // 1..5 words
            let score: Vec<Vec<f64>> = (0..n)
                .map(|_| {
                    (0..n)
                        .map(|_| (rng.below(2000) as f64 - 1000.0) / 97.0)
                        .collect()
                })
                .collect();
            let head = max_spanning_tree(&score);
            assert!(is_single_root_tree(&head), "{head:?}");
            let want = brute_force(&score);
            let got = tree_score(&score, &head);
            assert!(
                (got - want).abs() < 1e-9,
                "n {n}: {got} vs {want}, {head:?}"
            );
        }
    }

    #[test]
    fn a_cycle_of_best_heads_is_broken_and_one_root_is_kept() {
        // words 1 and 2 prefer each other; the root prefers both
        let ninf = f64::NEG_INFINITY;
        let score = vec![
            vec![ninf, 5.0, 5.0],
            vec![ninf, ninf, 10.0],
            vec![ninf, 9.0, ninf],
        ];
        let head = max_spanning_tree(&score);
        // 0 → 1 → 2 (5 + 10) beats 0 → 2 → 1 (5 + 9) and two root arcs
        assert_eq!(head, vec![0, 0, 1]);
    }
}
