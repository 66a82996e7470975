//! "Did you mean …?" for names people type (stage names, input names): the known name
//! nearest to a typo, by edit distance.

/// Levenshtein distance: single-character insertions, deletions and substitutions (the
/// names compared are short, so one row of the table is enough).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The known name nearest to `typed` when it is at most two edits away — close enough to
/// be a typo of it rather than another name; ties go to the name that sorts first.
pub fn nearest<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|name| (edit_distance(typed, name), name))
        .filter(|&(d, _)| d <= 2)
        .min()
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("data", "data"), 0);
        assert_eq!(edit_distance("dta", "data"), 1);
        assert_eq!(edit_distance("modle", "model"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn nearest_suggests_only_a_likely_typo() {
        let known = ["eval_ddi", "eval_ppi", "ft_ddi"];
        assert_eq!(nearest("eval_dd", known), Some("eval_ddi"));
        // two names one edit away: the first in sort order
        assert_eq!(
            nearest("eval_xpi", ["eval_ppi", "eval_dpi"]),
            Some("eval_dpi")
        );
        assert_eq!(nearest("probe", known), None);
    }
}
