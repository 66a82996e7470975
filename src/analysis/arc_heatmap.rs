//! One parsed sentence as an attention matrix with its arcs (Meng et al. 2019, §3: the
//! pair classifier reads the attention between two words, a^{i,j} ⊕ a^{j,i}; this draws
//! what it reads for one sentence).
//!
//! Row d is a dependent word, column h a candidate head (`ROOT`, i.e. `[CLS]`, then every
//! word); a cell's shade is the attention from d's first piece to h's (mean over every
//! layer and head, scaled to the matrix's largest weight). The gold head of each word is
//! framed; the predicted head is a red dot, so a dot inside a frame is a correct arc.

use std::fmt::Write as _;

use super::heatmap::escape_markup;

/// A sentence, its attention between words and its gold and predicted heads.
#[derive(Debug, Clone, PartialEq)]
pub struct ArcHeatmap {
    pub caption: String,
    /// The words, in order (word w is node w + 1; node 0 is ROOT).
    pub words: Vec<String>,
    /// `weights[w][h]`: attention from word w to node h (`h = 0` ROOT), `words.len() + 1`
    /// entries per row.
    pub weights: Vec<Vec<f64>>,
    /// Gold head node of each word (`None`: cut off by `max_len`).
    pub gold: Vec<Option<usize>>,
    /// Predicted head node of each word.
    pub predicted: Vec<Option<usize>>,
}

/// The darkest shade (the blue of the other heat maps).
const DARK: (f64, f64, f64) = (8.0, 48.0, 107.0);
const CELL: f64 = 22.0;
const FONT_SIZE: f64 = 12.0;
const CHAR_WIDTH: f64 = FONT_SIZE * 0.6;
const MARGIN: f64 = 10.0;

fn fill(t: f64) -> String {
    let shade = |full: f64| (255.0 - t * (255.0 - full)).round() as u8;
    format!("rgb({},{},{})", shade(DARK.0), shade(DARK.1), shade(DARK.2))
}

impl ArcHeatmap {
    /// Correct heads among the words that have a gold and a predicted head.
    pub fn correct(&self) -> (usize, usize) {
        let scored = self
            .gold
            .iter()
            .zip(&self.predicted)
            .filter_map(|(g, p)| Some((g.as_ref()?, p.as_ref()?)));
        scored.fold((0, 0), |(ok, n), (g, p)| (ok + usize::from(g == p), n + 1))
    }

    /// The SVG image: column labels written upwards above the matrix, row labels left of it.
    pub fn svg(&self) -> String {
        let n = self.words.len();
        let columns: Vec<String> = std::iter::once("ROOT".to_string())
            .chain(self.words.iter().cloned())
            .collect();
        let longest = columns.iter().map(|w| w.chars().count()).max().unwrap_or(4) as f64;
        let (ok, scored) = self.correct();
        let captions = [
            self.caption.clone(),
            format!("heads right: {ok} of {scored} (frame: gold head; dot: predicted)"),
        ];
        let left = MARGIN + longest * CHAR_WIDTH + 6.0;
        let top = MARGIN + 3.0 * FONT_SIZE + longest * CHAR_WIDTH + 10.0;
        let widest = captions
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0) as f64;
        let width = (left + (n + 1) as f64 * CELL + MARGIN).max(2.0 * MARGIN + widest * CHAR_WIDTH);
        let height = top + n as f64 * CELL + MARGIN;
        let max = self
            .weights
            .iter()
            .flatten()
            .copied()
            .filter(|w| w.is_finite())
            .fold(0.0f64, f64::max);
        let mut body = String::new();
        for (i, caption) in captions.iter().enumerate() {
            let _ = writeln!(
                body,
                "<text x=\"{MARGIN}\" y=\"{:.1}\" fill=\"#333\">{}</text>",
                MARGIN + (i + 1) as f64 * (FONT_SIZE + 2.0),
                escape_markup(caption)
            );
        }
        for (h, word) in columns.iter().enumerate() {
            let x = left + h as f64 * CELL + CELL / 2.0 + FONT_SIZE / 3.0;
            let y = top - 4.0;
            let _ = writeln!(
                body,
                "<text transform=\"translate({x:.1},{y:.1}) rotate(-90)\">{}</text>",
                escape_markup(word)
            );
        }
        for (d, word) in self.words.iter().enumerate() {
            let y = top + d as f64 * CELL;
            let _ = writeln!(
                body,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left - 4.0,
                y + CELL / 2.0 + FONT_SIZE / 3.0,
                escape_markup(word)
            );
            for (h, column) in columns.iter().enumerate() {
                let w = self
                    .weights
                    .get(d)
                    .and_then(|r| r.get(h))
                    .copied()
                    .unwrap_or(0.0);
                let t = if max > 0.0 && w.is_finite() {
                    (w / max).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let x = left + h as f64 * CELL;
                let _ = writeln!(
                    body,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{CELL}\" height=\"{CELL}\" \
                     fill=\"{}\" stroke=\"#eee\"><title>{} → {}: {w:.4}</title></rect>",
                    fill(t),
                    escape_markup(word),
                    escape_markup(column)
                );
            }
            if let Some(Some(g)) = self.gold.get(d) {
                let x = left + *g as f64 * CELL;
                let _ = writeln!(
                    body,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" \
                     stroke=\"#000\" stroke-width=\"2\"/>",
                    x + 1.0,
                    y + 1.0,
                    CELL - 2.0,
                    CELL - 2.0
                );
            }
            if let Some(Some(p)) = self.predicted.get(d) {
                let x = left + *p as f64 * CELL + CELL / 2.0;
                let _ = writeln!(
                    body,
                    "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#d62728\"/>",
                    y + CELL / 2.0
                );
            }
        }
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"monospace\" \
             font-size=\"{FONT_SIZE}\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
             {body}</svg>\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence() -> ArcHeatmap {
        ArcHeatmap {
            caption: "test sentence 1".into(),
            words: vec!["Dogs".into(), "bark".into(), "<loudly>".into()],
            weights: vec![
                vec![0.1, 0.0, 0.8, 0.1],
                vec![0.5, 0.2, 0.0, 0.3],
                vec![0.0, 0.1, 0.9, 0.0],
            ],
            gold: vec![Some(2), Some(0), Some(2)],
            predicted: vec![Some(2), Some(3), None],
        }
    }

    #[test]
    fn counts_correct_heads_over_the_words_with_both() {
        // word 1 wrong (3 for 0), word 3 has no prediction
        assert_eq!(sentence().correct(), (1, 2));
    }

    #[test]
    fn draws_every_cell_one_frame_per_gold_head_and_one_dot_per_prediction() {
        let svg = sentence().svg();
        assert_eq!(svg.matches("<title>").count(), 3 * 4);
        assert_eq!(svg.matches("stroke-width=\"2\"").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("heads right: 1 of 2"));
        assert!(svg.contains("&lt;loudly&gt;"), "words are escaped");
        // the largest weight is the darkest cell, a zero weight white
        assert!(svg.contains("fill=\"rgb(8,48,107)\""));
        assert!(svg.contains("fill=\"rgb(255,255,255)\""));
    }
}
