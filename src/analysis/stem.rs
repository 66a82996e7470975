//! Porter stems (su2020 IV.D: "we utilize Porter's stemmer to remove the morphological
//! affixes from each word", e.g. `activate`, `activates`, `activation` → `activ`).
//!
//! The stemmer is the original Porter (1980) algorithm as implemented by the Snowball
//! project (`tantivy-stemmers`, feature `english_porter`), not Snowball's later "English"
//! (Porter2) stemmer that `rust-stemmers` offers: the papers' Table V / Table 8 list both
//! `concomitantli` and `concomit`, which only the original algorithm keeps apart (Porter2
//! stems `concomitantly` to `concomit`). It follows the 1980 paper exactly, so it differs
//! from Porter's later C reference on a few words (`-bli` → `-ble`, `-logi` → `-log`, and
//! words of one or two letters, which the C version leaves alone), and from NLTK's default
//! `PorterStemmer` mode (its own extensions, e.g. `dying` → `die`).

/// The Porter stem of `word`, lower-cased first (`Interacts` → `interact`).
pub fn porter_stem(word: &str) -> String {
    let lower = word.to_lowercase();
    tantivy_stemmers::algorithms::english_porter(&lower).into_owned()
}

#[cfg(test)]
mod tests {
    use super::porter_stem;

    #[test]
    fn stems_follow_porters_1980_algorithm() {
        // (word, stem): examples from Porter's paper (steps 1a–5) and the su2020/su2022
        // trigger words; each pair checked by hand against the rules.
        let cases = [
            ("caresses", "caress"),             // 1a SSES → SS
            ("ponies", "poni"),                 // 1a IES → I
            ("cats", "cat"),                    // 1a S →
            ("agreed", "agre"),                 // 1b (m>0) EED → EE, then 5a
            ("plastered", "plaster"),           // 1b (*v*) ED →
            ("motoring", "motor"),              // 1b (*v*) ING →
            ("happy", "happi"),                 // 1c (*v*) Y → I
            ("relational", "relat"),            // 2 ATIONAL → ATE; 4 needs m>1, m(rel) = 1; 5a E →
            ("triplicate", "triplic"),          // 3 ICATE → IC
            ("adjustment", "adjust"),           // 4 (m>1) MENT →
            ("agreement", "agreement"),         // 4: longest suffix EMENT, m(agr) = 1, kept
            ("interacts", "interact"),          // 1a
            ("interaction", "interact"),        // 4 (m>1 and (*S or *T)) ION →
            ("inhibition", "inhibit"),          // 4 ION → after T
            ("binding", "bind"),                // 1b ING →
            ("activates", "activ"),             // 1a, 4 ATE →
            ("activation", "activ"),            // 2 ATION → ATE, 4 ATE →
            ("associated", "associ"),           // 1b ED → , +E, 4 ATE →
            ("decreased", "decreas"),           // 1b (*v*) ED →
            ("stimulates", "stimul"),           // 1a S →, 4 (m>1) ATE →
            ("regulates", "regul"),             // 1a S →, 4 (m>1) ATE →
            ("mediates", "mediat"),             // 4 ATE needs m>1: m(medi) = 1, so only 5a E →
            ("concomitantly", "concomitantli"), // 1c, no step-2 rule for ANTLI
            ("concomitant", "concomit"),        // 4 ANT →
            ("Interacts", "interact"),          // lower-cased first
        ];
        for (word, stem) in cases {
            assert_eq!(porter_stem(word), stem, "{word}");
        }
    }
}
