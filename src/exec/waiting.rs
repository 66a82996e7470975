//! Which stages of a run may start: for each stage to run, how many of the stages it
//! waits for have not finished yet, and for each stage the stages that wait for it.
//!
//! Counts and flat lists (Kahn's algorithm): a map of parent sets, one per stage, and a
//! map of dependent lists took ~25 MB of a cold run of 100,000 stages (#27).

use std::collections::VecDeque;

/// `left` of a stage that waits for nothing more: ready, started, skipped or not to run.
const NOT_WAITING: u32 = u32::MAX;

/// The stages of a run that wait, and what each waits for.
pub(super) struct Waiting {
    /// Per instance, its parents that have not finished ([`NOT_WAITING`] when it waits
    /// for nothing more).
    left: Vec<u32>,
    /// The stages that wait for instance `i` are `children[start[i]..start[i + 1]]`.
    start: Vec<u32>,
    children: Vec<u32>,
}

impl Waiting {
    /// The waits among `n` instances: `edges` are (parent, child) pairs, each child a
    /// stage to run, each parent one that runs too (a pair may repeat). Returns the
    /// stages of `order` that wait for nothing, in that order, as the first ready ones.
    pub fn new(
        n: usize,
        mut edges: Vec<(u32, u32)>,
        order: impl Iterator<Item = usize>,
        runs: &[bool],
    ) -> (Self, VecDeque<usize>) {
        edges.sort_unstable();
        edges.dedup();
        let mut left = vec![NOT_WAITING; n];
        for (i, &r) in runs.iter().enumerate() {
            if r {
                left[i] = 0;
            }
        }
        let mut start = vec![0u32; n + 1];
        for &(parent, child) in &edges {
            start[parent as usize + 1] += 1;
            left[child as usize] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        // sorted by parent: the children are already in place
        let children = edges.into_iter().map(|(_, child)| child).collect();
        let mut waiting = Waiting {
            left,
            start,
            children,
        };
        let mut ready = VecDeque::new();
        for i in order {
            if waiting.left[i] == 0 {
                waiting.left[i] = NOT_WAITING;
                ready.push_back(i);
            }
        }
        (waiting, ready)
    }

    /// `done` finished: the stages that waited for it alone are moved to the FRONT of
    /// `ready` (in their order), ahead of the stages that were ready before. Depth first:
    /// what a finished stage unblocks (the cheap `evaluate` after a fine-tuning) runs
    /// before the next sibling starts, so a grid's results, and the report read while it
    /// runs, fill in cell by cell, and a run stopped halfway leaves whole cells, not ten
    /// fine-tunings without their scores.
    pub fn release(&mut self, done: usize, ready: &mut VecDeque<usize>) {
        let (from, to) = (self.start[done] as usize, self.start[done + 1] as usize);
        let mut unblocked = 0;
        for &c in &self.children[from..to] {
            let left = &mut self.left[c as usize];
            if *left == NOT_WAITING {
                continue;
            }
            *left -= 1;
            if *left == 0 {
                *left = NOT_WAITING;
                ready.push_back(c as usize);
                unblocked += 1;
            }
        }
        // the `unblocked` just pushed at the back move to the front, in their order
        ready.rotate_right(unblocked);
    }

    /// Stops `i` from waiting (an upstream stage failed); whether it was waiting.
    pub fn cancel(&mut self, i: usize) -> bool {
        std::mem::replace(&mut self.left[i], NOT_WAITING) != NOT_WAITING
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_ready_once_every_parent_finished() {
        // 0 -> 2, 1 -> 2 (twice: two inputs read it), 2 -> 3; 4 does not run
        let runs = [true, true, true, true, false];
        let edges = vec![(0, 2), (1, 2), (1, 2), (2, 3)];
        let (mut w, mut ready) = Waiting::new(5, edges, [1, 0, 2, 3, 4].into_iter(), &runs);
        assert_eq!(Vec::from(ready.clone()), vec![1, 0]);
        ready.clear();
        w.release(1, &mut ready);
        assert!(ready.is_empty(), "2 still waits for 0");
        w.release(0, &mut ready);
        assert_eq!(Vec::from(ready.clone()), vec![2]);
        ready.clear();
        assert!(w.cancel(3), "3 waited for 2");
        assert!(!w.cancel(3), "and waits no more");
        w.release(2, &mut ready);
        assert!(ready.is_empty(), "a cancelled stage is never ready");
    }

    #[test]
    fn what_a_finished_stage_unblocks_runs_before_its_waiting_siblings() {
        // two fine-tunings 0 and 1, each scored by one evaluate (2 and 3), and a report 4
        // over both scores; 5 and 6 score 0 too
        let runs = [true; 7];
        let edges = vec![(0, 2), (1, 3), (2, 4), (3, 4), (0, 5), (0, 6)];
        let (mut w, mut ready) = Waiting::new(7, edges, 0..7, &runs);
        assert_eq!(Vec::from(ready.clone()), vec![0, 1]);
        assert_eq!(ready.pop_front(), Some(0));
        w.release(0, &mut ready);
        assert_eq!(
            Vec::from(ready.clone()),
            vec![2, 5, 6, 1],
            "0's scores first, in order, then the next fine-tuning"
        );
    }
}
