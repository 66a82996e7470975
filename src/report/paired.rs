//! Paired differences: model A against model B on the runs they share (the same seed), so
//! a table can say whether A beats B beyond the seed-to-seed scatter both columns carry.
//!
//! Two cells `32.1 ± 3.0` and `34.8 ± 2.9` overlap; the differences seed by seed may
//! still all point one way (same seed: the same data order, dropout masks and head
//! initialisation up to the encoder weights). `paired(a, b)` in a report template pairs
//! the rows of two selections by a coordinate (default `seed`) and renders
//! "+2.7 ± 0.8 (higher in 3 of 3)".

use std::fmt;
use std::sync::Arc;

use minijinja::value::{from_args, Enumerator, Object, ObjectRepr, Value};
use minijinja::{Error, ErrorKind, State};

use super::cells::{missing, signed_points, Footnotes, NoteKind};
use super::rows::{coord_text, same_value, ResultRow};
use crate::metrics::MeanStd;

/// The level of the paired t-test a verdict applies: a claim is confirmed (or refuted)
/// where chance alone would show a difference this far from 0 in under 5 % of repeats.
pub const SIGNIFICANCE: f64 = 0.05;

/// What a paper claims of a difference A − B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A scores higher than B.
    Higher,
    /// A scores lower than B.
    Lower,
    /// A and B score the same.
    NoChange,
}

impl Claim {
    /// The claim a template's `sign` names: 1 higher, −1 lower, 0 no change.
    pub fn from_sign(sign: i64) -> Claim {
        match sign.signum() {
            1 => Claim::Higher,
            -1 => Claim::Lower,
            _ => Claim::NoChange,
        }
    }
}

/// Our verdict on a [`Claim`] from the paired differences over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The differences lean the claimed way beyond chance (one-sided paired t-test at
    /// [`SIGNIFICANCE`]; for a claim of no change: never, see `Noise`).
    Confirmed,
    /// They lean the other way beyond chance (for a claim of no change: either way,
    /// two-sided).
    Refuted,
    /// Neither: the seeds' scatter could explain the mean difference.
    Noise,
    /// One pair: no spread to judge by.
    OneRun,
    /// No run has both results yet.
    NotRun,
}

/// A [`Verdict`] with the p-value of the test that decided it: the claimed direction's
/// (one-sided) where it is confirmed or inside the noise, the other direction's where it
/// is refuted, the two-sided one for a claim of no change; `None` below two pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub p: Option<f64>,
}

impl Judgement {
    /// The verdict on `claim` from the differences' `spread` (`None`: no pair) by a paired
    /// t-test at [`SIGNIFICANCE`]: one-sided for a claimed direction, two-sided for a claim
    /// of no change. With 2 seeds the mean difference must lie 4.5 sample stds from 0, with
    /// 3 seeds 1.7, with 5 seeds 1.0.
    pub fn of(spread: Option<&MeanStd>, claim: Claim) -> Judgement {
        let Some(s) = spread else {
            return Judgement::without_p(Verdict::NotRun);
        };
        let Some(p_higher) = s.p_above_zero() else {
            return Judgement::without_p(Verdict::OneRun);
        };
        let p_lower = 1.0 - p_higher;
        let (p_claimed, p_against) = match claim {
            Claim::Higher => (p_higher, p_lower),
            Claim::Lower => (p_lower, p_higher),
            Claim::NoChange => {
                let two_sided = (2.0 * p_higher.min(p_lower)).min(1.0);
                let verdict = if two_sided < SIGNIFICANCE {
                    Verdict::Refuted
                } else {
                    Verdict::Noise
                };
                return Judgement {
                    verdict,
                    p: Some(two_sided),
                };
            }
        };
        let (verdict, p) = if p_claimed < SIGNIFICANCE {
            (Verdict::Confirmed, p_claimed)
        } else if p_against < SIGNIFICANCE {
            (Verdict::Refuted, p_against)
        } else {
            (Verdict::Noise, p_claimed)
        };
        Judgement {
            verdict,
            p: Some(p),
        }
    }

    fn without_p(verdict: Verdict) -> Judgement {
        Judgement { verdict, p: None }
    }

    /// "p = 0.022", "p = 0.15", "p < 0.001": three decimals below 0.1, two above.
    pub fn p_text(&self) -> Option<String> {
        self.p.map(|p| match p {
            p if p < 0.001 => "p < 0.001".to_string(),
            p if p < 0.1 => format!("p = {p:.3}"),
            p => format!("p = {p:.2}"),
        })
    }
}

impl Verdict {
    /// The name a template compares against.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Confirmed => "confirmed",
            Verdict::Refuted => "refuted",
            Verdict::Noise => "noise",
            Verdict::OneRun => "one_run",
            Verdict::NotRun => "not_run",
        }
    }
}

/// Why two selections cannot be paired.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PairingError {
    /// One side has two rows with the same value of the pairing coordinate (e.g. two heads
    /// for seed 1): the selection is not narrow enough.
    #[error(
        "paired: the {side} selection has {count} results with {by}={value}; narrow it \
         (e.g. head=...) so that each {by} has one result"
    )]
    Ambiguous {
        side: &'static str,
        by: String,
        value: String,
        count: usize,
    },
}

/// The differences `a − b` of one metric over the runs both sides have.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedDifference {
    /// `(value of the pairing coordinate, a − b)` in the order of `a`'s rows.
    pub pairs: Vec<(serde_json::Value, f64)>,
}

impl PairedDifference {
    /// Pairs `a` and `b` by coordinate `by`, skipping runs that lack `metric` on either side.
    pub fn of(
        a: &[&ResultRow],
        b: &[&ResultRow],
        by: &str,
        metric: &str,
    ) -> Result<PairedDifference, PairingError> {
        PairedDifference::of_metrics(a, b, by, [metric, metric])
    }

    /// [`Self::of`] where the two sides keep the score under different paths (a task's
    /// score inside a multi-task result, `tasks.ddi.f1`, against a single-task `f1`).
    pub fn of_metrics(
        a: &[&ResultRow],
        b: &[&ResultRow],
        by: &str,
        [metric_a, metric_b]: [&str; 2],
    ) -> Result<PairedDifference, PairingError> {
        unique_by(a, by, "first")?;
        unique_by(b, by, "second")?;
        let pairs = a
            .iter()
            .filter_map(|ra| {
                let at = ra.field(by);
                let rb = b.iter().find(|rb| same_value(&rb.field(by), &at))?;
                Some((at, ra.metric(metric_a)? - rb.metric(metric_b)?))
            })
            .collect();
        Ok(PairedDifference { pairs })
    }

    /// Mean and sample std of the differences (fractions); `None` without pairs.
    pub fn spread(&self) -> Option<MeanStd> {
        let diffs: Vec<f64> = self.pairs.iter().map(|(_, d)| *d).collect();
        MeanStd::of(&diffs)
    }

    /// The one-sided p-value of "a is higher" by a paired t-test
    /// ([`MeanStd::p_above_zero`] of the differences); `None` below two pairs.
    pub fn p_higher(&self) -> Option<f64> {
        self.spread()?.p_above_zero()
    }

    /// The verdict on `claim` and its p-value ([`Judgement::of`] these differences).
    pub fn judge(&self, claim: Claim) -> Judgement {
        Judgement::of(self.spread().as_ref(), claim)
    }

    /// Pairs in which `a` is higher.
    pub fn higher(&self) -> usize {
        self.pairs.iter().filter(|(_, d)| *d > 0.0).count()
    }

    /// "+2.7 ± 0.8 (higher in 3 of 3)", "−1.0 (1 run)" in percentage points; `None`
    /// without pairs.
    pub fn text(&self) -> Option<String> {
        let s = self.spread()?;
        let mean = signed_points(s.mean * 100.0);
        Some(match s.std {
            Some(std) => format!(
                "{mean} ± {:.1} (higher in {} of {})",
                std * 100.0,
                self.higher(),
                s.n
            ),
            None => format!("{mean} (1 run)"),
        })
    }
}

/// An error naming the first value of `by` that two rows of `rows` share.
fn unique_by(rows: &[&ResultRow], by: &str, side: &'static str) -> Result<(), PairingError> {
    for (i, r) in rows.iter().enumerate() {
        let v = r.field(by);
        // no earlier row has `v` (it would have returned), so this counts them all
        let count = 1 + rows[i + 1..]
            .iter()
            .filter(|o| same_value(&o.field(by), &v))
            .count();
        if count > 1 {
            return Err(PairingError::Ambiguous {
                side,
                by: by.to_string(),
                value: coord_text(&v),
                count,
            });
        }
    }
    Ok(())
}

/// A paired difference in a template: renders its text, or "—" with a footnote when no
/// run has both results yet; `mean`, `std`, `n`, `higher` and `p_higher` for templates
/// that compute, and `judge(sign)`: `{verdict, p}` on the claim `sign` names
/// ([`Claim::from_sign`]), the [`Verdict`]'s name and [`Judgement::p_text`].
#[derive(Debug)]
pub struct PairedCell {
    pub difference: PairedDifference,
    pub notes: Arc<Footnotes>,
}

impl PairedCell {
    fn text(&self) -> String {
        self.difference.text().unwrap_or_else(|| {
            missing(
                &self.notes,
                NoteKind::MissingResult,
                "No run (seed) has both results of this comparison yet; the tables above \
                 say which has not run.",
            )
        })
    }
}

impl Object for PairedCell {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let s = self.difference.spread();
        match key.as_str()? {
            "mean" => Some(s.map(|s| s.mean).into()),
            "std" => Some(s.and_then(|s| s.std).into()),
            "n" => Some(s.map_or(0, |s| s.n).into()),
            "higher" => Some(self.difference.higher().into()),
            "p_higher" => Some(s.and_then(|s| s.p_above_zero()).into()),
            "missing" => Some(s.is_none().into()),
            "text" => Some(self.text().into()),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["mean", "std", "n", "higher", "p_higher", "missing", "text"])
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        if method != "judge" {
            return Err(Error::from(ErrorKind::UnknownMethod));
        }
        let (sign,): (i64,) = from_args(args)?;
        let judgement = self.difference.judge(Claim::from_sign(sign));
        Ok(Value::from_iter([
            ("verdict", Value::from(judgement.verdict.name())),
            ("p", Value::from(judgement.p_text())),
        ]))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(head: &str, seed: i64, f1: f64) -> ResultRow {
        ResultRow {
            input: "ddi".into(),
            stage: format!("eval[head={head},seed={seed}]"),
            key: String::new(),
            coords: [("head".into(), json!(head)), ("seed".into(), json!(seed))].into(),
            metrics: json!({ "f1": f1 }),
            history: None,
            stats: None,
            dir: None,
        }
    }

    #[test]
    fn differences_by_hand() {
        let a = [
            run("att", 1, 0.30),
            run("att", 2, 0.40),
            run("att", 3, 0.50),
        ];
        // seed 4 has no partner; seed 1.0 pairs with seed 1
        let b = [
            run("cls", 1, 0.25),
            run("cls", 2, 0.45),
            run("cls", 3, 0.40),
            run("cls", 4, 0.90),
        ];
        let (a, b): (Vec<_>, Vec<_>) = (a.iter().collect(), b.iter().collect());
        let d = PairedDifference::of(&a, &b, "seed", "f1").unwrap();
        // +5, −5, +10 points: mean 10/3; deviations 5/3, −25/3, 20/3 → ss = 1050/9,
        // / 2 = 58.33, std 7.64
        let s = d.spread().unwrap();
        assert!((s.mean * 100.0 - 10.0 / 3.0).abs() < 1e-9);
        assert!((s.std.unwrap() * 100.0 - 58.333_333f64.sqrt()).abs() < 1e-5);
        assert_eq!(d.higher(), 2);
        assert_eq!(d.text().unwrap(), "+3.3 ± 7.6 (higher in 2 of 3)");
    }

    /// Differences (points) seed by seed as a `PairedDifference`.
    fn differences(points: &[f64]) -> PairedDifference {
        PairedDifference {
            pairs: (1..)
                .zip(points)
                .map(|(seed, d)| (json!(seed), d / 100.0))
                .collect(),
        }
    }

    #[test]
    fn verdicts_by_a_paired_t_test() {
        use Claim::*;
        let verdict = |points: &[f64], claim| differences(points).judge(claim).verdict;
        // +1, +2, +3: mean 2, std 1, t = 2·√3 = 3.464 on 2 degrees; P(T > t) =
        // 1/2 − t / (2·√(t² + 2)) = 1/2 − 3.464 / 7.483 = 0.037 < 0.05
        let rising = differences(&[1.0, 2.0, 3.0]);
        assert!((rising.p_higher().unwrap() - 0.0371).abs() < 1e-4);
        let confirmed = rising.judge(Higher);
        assert_eq!(confirmed.verdict, Verdict::Confirmed);
        assert_eq!(confirmed.p_text().unwrap(), "p = 0.037");
        // claimed lower: refuted by the same test, the other way
        assert_eq!(
            rising.judge(Lower),
            judgement(Verdict::Refuted, confirmed.p)
        );
        // +1, +3: mean 2, std √2, t = 2 on 1 degree (Cauchy): 1/2 − atan(2)/π = 0.148. The
        // one-std rule this replaces called it confirmed (2 > 1.41).
        let two_seeds = differences(&[1.0, 3.0]).judge(Higher);
        assert_eq!(two_seeds.verdict, Verdict::Noise);
        assert_eq!(two_seeds.p_text().unwrap(), "p = 0.15");
        // the hand-computed +5, −5, +10 above: t = 3.33 / (7.64 / √3) = 0.76, p = 0.26
        assert_eq!(verdict(&[5.0, -5.0, 10.0], Higher), Verdict::Noise);
        // a claim of no change, two-sided: −3, −4, −5: t = −4·√3 = −6.93 on 2 degrees,
        // 2·(1/2 − 6.93 / (2·√50)) = 0.020 < 0.05
        let moved = differences(&[-3.0, -4.0, -5.0]).judge(NoChange);
        assert_eq!(moved.verdict, Verdict::Refuted);
        assert_eq!(moved.p_text().unwrap(), "p = 0.020");
        assert_eq!(verdict(&[-1.0, 1.0, 0.5], NoChange), Verdict::Noise);
        // no spread: every seed the same difference
        let same = differences(&[1.0, 1.0]).judge(Higher);
        assert_eq!(same.verdict, Verdict::Confirmed);
        assert_eq!(same.p_text().unwrap(), "p < 0.001");
        assert_eq!(verdict(&[0.0, 0.0], Higher), Verdict::Noise);
        assert_eq!(verdict(&[0.0, 0.0], NoChange), Verdict::Noise);
        assert_eq!(verdict(&[2.0], Higher), Verdict::OneRun);
        assert_eq!(differences(&[2.0]).judge(Higher).p, None);
        assert_eq!(verdict(&[], Higher), Verdict::NotRun);
        assert_eq!(Claim::from_sign(-1), Lower);
        assert_eq!(Claim::from_sign(0), NoChange);
    }

    /// How often each rule confirms a claim by chance (no true difference): the one-std
    /// rule this test replaced confirms where mean > std, i.e. t = mean / (std / √n) > √n,
    /// with probability P(T > √n) on n − 1 degrees; the t-test, 5 % at every n.
    #[test]
    fn the_one_std_rule_confirmed_by_chance_one_time_in_five_at_two_seeds() {
        let one_std = |n: usize| crate::metrics::student_t::upper_tail((n as f64).sqrt(), n - 1);
        assert!((one_std(2) - 0.196).abs() < 1e-3);
        assert!((one_std(3) - 0.113).abs() < 1e-3);
        assert!(one_std(5) < SIGNIFICANCE);
        // the t-test's threshold for n = 2: 4.46 stds (t = 6.314 = 4.46·√2); ±0.5 around
        // the mean gives std 1/√2, so the mean at the threshold is 4.465 / √2 = 3.157
        let at_threshold = differences(&[3.157 + 0.5, 3.157 - 0.5]);
        assert!((at_threshold.p_higher().unwrap() - 0.05).abs() < 1e-3);
    }

    fn judgement(verdict: Verdict, p: Option<f64>) -> Judgement {
        Judgement { verdict, p }
    }

    #[test]
    fn one_pair_none_and_ambiguous() {
        let a = [run("att", 2, 0.30)];
        let b = [run("cls", 2, 0.31), run("cls", 3, 0.2)];
        let (ar, br): (Vec<_>, Vec<_>) = (a.iter().collect(), b.iter().collect());
        let d = PairedDifference::of(&ar, &br, "seed", "f1").unwrap();
        assert_eq!(d.text().unwrap(), "−1.0 (1 run)");

        let none = PairedDifference::of(&ar, &br[1..], "seed", "f1").unwrap();
        assert_eq!(none.text(), None);

        let two_heads = [run("att", 2, 0.3), run("cls", 2, 0.3)];
        let tr: Vec<_> = two_heads.iter().collect();
        let err = PairedDifference::of(&tr, &br, "seed", "f1").unwrap_err();
        assert!(err
            .to_string()
            .contains("first selection has 2 results with seed=2"));
    }
}
