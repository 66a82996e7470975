//! Defaults of the params the training stages share (`finetune`, `multitask`, `probe`):
//! the papers' fine-tuning settings (su2020 III.D, su2022 "Experiment setup", Peng et al.
//! 2020 §3.2), written once.

pub fn lr() -> f64 {
    2e-5
}
pub fn batch_size() -> usize {
    32
}
/// Word pieces per instance, [CLS] and [SEP] included.
pub fn max_len() -> usize {
    128
}
pub fn warmup() -> f64 {
    0.1
}
pub fn weight_decay() -> f64 {
    0.01
}
pub fn grad_clip() -> f64 {
    1.0
}
pub fn seed() -> u64 {
    1
}
pub fn dropout() -> f64 {
    0.1
}
/// Hidden size of the LSTM heads (768 in su2022).
pub fn lstm_hidden() -> usize {
    768
}
pub fn yes() -> bool {
    true
}
/// A flag at its default `true` is left out of a stage's key (a param added later: results
/// cached before it existed stay valid).
pub fn is_yes(flag: &bool) -> bool {
    *flag
}
/// Layer-wise learning-rate decay ξ: 1, none (MTL-LS uses 0.9).
pub fn layer_decay() -> f64 {
    1.0
}
/// `layer_decay` at its default is left out of a stage's key, so results cached before the
/// param existed stay valid.
pub fn is_no_layer_decay(decay: &f64) -> bool {
    *decay == 1.0
}
