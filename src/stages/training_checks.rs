//! The checks each training stage (`finetune`, `probe`, `pretrain`) makes at plan time on
//! the params they share (counts, optimizer settings), so a bad value reads the same
//! whichever stage has it.

use super::ParamError;
use crate::train::Init;

/// The shared optimizer params of a training stage, as written in its YAML.
pub struct OptimizerParams {
    pub lr: f64,
    pub max_len: usize,
    /// The shortest `max_len` the stage can use ([CLS], [SEP] and what it needs between).
    pub min_max_len: usize,
    pub warmup: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
}

/// The first `(name, value)` whose value is 0 is an error: these counts must be positive.
pub fn check_positive(counts: &[(&str, usize)]) -> Result<(), ParamError> {
    match counts.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(ParamError::new(*name, "must be positive")),
        None => Ok(()),
    }
}

/// `value` finite and ≥ 0 (a rate, a decay, a clipping norm).
pub fn check_non_negative(name: &str, value: f64) -> Result<(), ParamError> {
    if value >= 0.0 && value.is_finite() {
        Ok(())
    } else {
        Err(ParamError::new(name, format!("{value} must be ≥ 0")))
    }
}

/// `tiny` (the smoke-test encoder) only makes sense for a randomly initialised one.
pub fn check_tiny(tiny: bool, init: Init) -> Result<(), ParamError> {
    if tiny && init != Init::Random {
        return Err(ParamError::new("tiny", "needs `init: random`"));
    }
    Ok(())
}

/// Caps on the training and evaluation sets must leave something.
pub fn check_caps(max_train: Option<usize>, max_eval: Option<usize>) -> Result<(), ParamError> {
    if max_train == Some(0) || max_eval == Some(0) {
        return Err(ParamError::new(
            "max_train/max_eval",
            "a cap of 0 leaves nothing to train or evaluate",
        ));
    }
    Ok(())
}

/// BERT's position embeddings end at 512.
const MAX_POSITIONS: usize = 512;

/// `lr` positive and finite, `max_len` in `min_max_len..=512`, `warmup` in [0, 1],
/// `weight_decay` and `grad_clip` finite and ≥ 0.
pub fn check_optimizer_params(p: &OptimizerParams) -> Result<(), ParamError> {
    if !(p.lr > 0.0 && p.lr.is_finite()) {
        return Err(ParamError::new(
            "lr",
            format!("{} is not a positive number", p.lr),
        ));
    }
    if !(p.min_max_len..=MAX_POSITIONS).contains(&p.max_len) {
        return Err(ParamError::new(
            "max_len",
            format!(
                "{} is outside {}..={MAX_POSITIONS}",
                p.max_len, p.min_max_len
            ),
        ));
    }
    if !(0.0..=1.0).contains(&p.warmup) {
        return Err(ParamError::new(
            "warmup",
            format!("{} is outside [0, 1]", p.warmup),
        ));
    }
    check_non_negative("weight_decay", p.weight_decay)?;
    check_non_negative("grad_clip", p.grad_clip)
}

/// `dropout` is a probability in [0, 1).
pub fn check_dropout(dropout: f64) -> Result<(), ParamError> {
    if (0.0..1.0).contains(&dropout) {
        Ok(())
    } else {
        Err(ParamError::new(
            "dropout",
            format!("{dropout} is outside [0, 1)"),
        ))
    }
}

/// `layer_decay` ξ in (0, 1].
pub fn check_layer_decay(decay: f64) -> Result<(), ParamError> {
    if decay > 0.0 && decay <= 1.0 {
        Ok(())
    } else {
        Err(ParamError::new(
            "layer_decay",
            format!("{decay} is outside (0, 1]"),
        ))
    }
}

/// `max_len` within the loaded model's position embeddings (known only at run time).
pub fn check_max_len_fits(
    max_len: usize,
    max_position_embeddings: usize,
) -> Result<(), ParamError> {
    if max_len > max_position_embeddings {
        return Err(ParamError::new(
            "max_len",
            format!(
                "{max_len} exceeds the model's max_position_embeddings {max_position_embeddings}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> OptimizerParams {
        OptimizerParams {
            lr: 2e-5,
            max_len: 128,
            min_max_len: 3,
            warmup: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
        }
    }

    #[test]
    fn names_the_first_zero_count() {
        assert!(check_positive(&[("epochs", 3), ("batch_size", 32)]).is_ok());
        let err = check_positive(&[("epochs", 3), ("batch_size", 0), ("steps", 0)]);
        assert_eq!(
            err.expect_err("zero").to_string(),
            "param `batch_size`: must be positive"
        );
    }

    #[test]
    fn names_the_bad_param() {
        assert!(check_optimizer_params(&good()).is_ok());
        let bad = |edit: fn(&mut OptimizerParams)| {
            let mut p = good();
            edit(&mut p);
            check_optimizer_params(&p)
                .expect_err("bad value")
                .to_string()
        };
        assert_eq!(
            bad(|p| p.lr = 0.0),
            "param `lr`: 0 is not a positive number"
        );
        assert_eq!(
            bad(|p| p.lr = f64::NAN),
            "param `lr`: NaN is not a positive number"
        );
        assert_eq!(
            bad(|p| p.max_len = 2),
            "param `max_len`: 2 is outside 3..=512"
        );
        assert_eq!(
            bad(|p| p.max_len = 513),
            "param `max_len`: 513 is outside 3..=512"
        );
        assert_eq!(
            bad(|p| p.warmup = 1.5),
            "param `warmup`: 1.5 is outside [0, 1]"
        );
        assert_eq!(
            bad(|p| p.weight_decay = -1.0),
            "param `weight_decay`: -1 must be ≥ 0"
        );
        assert_eq!(
            bad(|p| p.grad_clip = f64::INFINITY),
            "param `grad_clip`: inf must be ≥ 0"
        );
    }
}
