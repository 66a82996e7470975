//! Sentences drawn with each word's background as dark as its attention weight (su2022
//! Fig. 2, su2020 Fig. 3: "the darkness of the color represents the attention weight").
//!
//! Two renderings of the same sentences: a standalone HTML page (coloured `<span>`s whose
//! `title` gives the weight) and an SVG image a markdown report can embed with
//! `![…](heatmap.svg)`. Shades are per sentence: white for weight 0, darkest for the
//! sentence's largest word weight. Special tokens (`[CLS]`, `[SEP]`) are not drawn.

use std::fmt::Write as _;

use super::words::{Word, WordKind};

/// One sentence to draw: a caption line and its words.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapSentence {
    pub caption: String,
    pub words: Vec<Word>,
}

/// The darkest shade (the same blue as `report::plot::heat_map`).
const DARK: (f64, f64, f64) = (8.0, 48.0, 107.0);
/// Shade above which text is drawn white.
const LIGHT_TEXT_ABOVE: f64 = 0.55;

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML and SVG text and attribute values.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Each drawn word with its shade `t ∈ [0, 1]` (weight / the sentence's largest weight).
fn shaded(words: &[Word]) -> Vec<(&Word, f64)> {
    let drawn: Vec<&Word> = words
        .iter()
        .filter(|w| w.kind != WordKind::Special)
        .collect();
    let max = drawn.iter().map(|w| w.weight).fold(0.0f64, f64::max);
    drawn
        .into_iter()
        .map(|w| {
            let t = if max > 0.0 && w.weight.is_finite() {
                (w.weight / max).clamp(0.0, 1.0)
            } else {
                0.0
            };
            (w, t)
        })
        .collect()
}

/// `rgb(…)` from white (`t = 0`) to [`DARK`] (`t = 1`).
fn fill(t: f64) -> String {
    let shade = |full: f64| (255.0 - t * (255.0 - full)).round() as u8;
    format!("rgb({},{},{})", shade(DARK.0), shade(DARK.1), shade(DARK.2))
}

fn text_colour(t: f64) -> &'static str {
    if t > LIGHT_TEXT_ABOVE {
        "#fff"
    } else {
        "#000"
    }
}

/// A standalone HTML page with one paragraph per sentence.
pub fn render_html(title: &str, sentences: &[HeatmapSentence]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{0}</title>\n<style>\n\
         body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; }}\n\
         .caption {{ color: #555; font-size: 90%; margin-bottom: 0.3em; }}\n\
         .sentence {{ line-height: 2; margin-bottom: 1.5em; }}\n\
         .w {{ padding: 2px 3px; border-radius: 2px; }}\n\
         </style>\n</head>\n<body>\n<h1>{0}</h1>\n",
        escape_markup(title)
    );
    for sentence in sentences {
        let _ = writeln!(
            html,
            "<p class=\"caption\">{}</p>\n<p class=\"sentence\">",
            escape_markup(&sentence.caption)
        );
        for (word, t) in shaded(&sentence.words) {
            let _ = writeln!(
                html,
                "<span class=\"w\" style=\"background-color:{};color:{}\" title=\"{:.4}\">{}</span>",
                fill(t),
                text_colour(t),
                word.weight,
                escape_markup(&word.text)
            );
        }
        html.push_str("</p>\n");
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// SVG layout, in pixels: monospace text so a word's width follows from its length.
const WIDTH: f64 = 960.0;
const MARGIN: f64 = 12.0;
const FONT_SIZE: f64 = 13.0;
/// Advance of one monospace character at [`FONT_SIZE`] (0.6 em).
const CHAR_WIDTH: f64 = FONT_SIZE * 0.6;
const PAD: f64 = 4.0;
const GAP: f64 = 4.0;
const BOX_HEIGHT: f64 = 20.0;
const LINE_HEIGHT: f64 = 24.0;
const SENTENCE_GAP: f64 = 14.0;

/// An SVG image with the sentences one below the other, words wrapped to the width; each
/// word's `<title>` gives its weight.
pub fn render_svg(sentences: &[HeatmapSentence]) -> String {
    let mut body = String::new();
    let mut y = MARGIN;
    for sentence in sentences {
        y += FONT_SIZE;
        let _ = writeln!(
            body,
            "<text x=\"{MARGIN}\" y=\"{y:.1}\" fill=\"#555\" font-family=\"sans-serif\">{}</text>",
            escape_markup(&sentence.caption)
        );
        y += GAP + 2.0;
        let mut x = MARGIN;
        for (word, t) in shaded(&sentence.words) {
            let width = word.text.chars().count() as f64 * CHAR_WIDTH + 2.0 * PAD;
            if x > MARGIN && x + width > WIDTH - MARGIN {
                x = MARGIN;
                y += LINE_HEIGHT;
            }
            let text = escape_markup(&word.text);
            let _ = writeln!(
                body,
                "<g><title>{text} {:.4}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" \
                 height=\"{BOX_HEIGHT}\" rx=\"2\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" \
                 text-anchor=\"middle\" fill=\"{}\">{text}</text></g>",
                word.weight,
                fill(t),
                x + width / 2.0,
                y + BOX_HEIGHT - 6.0,
                text_colour(t),
            );
            x += width + GAP;
        }
        y += LINE_HEIGHT + SENTENCE_GAP;
    }
    let height = y + MARGIN;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH} {height:.0}\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" \
         font-size=\"{FONT_SIZE}\">\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n{body}</svg>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(text: &str, weight: f64, kind: WordKind) -> Word {
        Word {
            text: text.into(),
            weight,
            kind,
        }
    }

    fn sentence() -> HeatmapSentence {
        HeatmapSentence {
            caption: "id <1> & \"gold\"".into(),
            words: vec![
                word("[CLS]", 0.0, WordKind::Special),
                word("@GENE$", 0.2, WordKind::Entity),
                word("<b>", 0.1, WordKind::Text),
                word("binds", 0.4, WordKind::Text),
                word("[SEP]", 0.0, WordKind::Special),
            ],
        }
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape_markup(r#"a<b>&"c"'d'"#),
            "a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39;"
        );
    }

    #[test]
    fn html_escapes_words_and_shades_by_the_largest_weight() {
        let html = render_html("attention <α>", &[sentence()]);
        assert!(html.contains("<title>attention &lt;α&gt;</title>"));
        assert!(html.contains("id &lt;1&gt; &amp; &quot;gold&quot;"));
        assert!(html.contains(">&lt;b&gt;</span>"));
        assert!(!html.contains("<b>"));
        assert!(!html.contains("[CLS]") && !html.contains("[SEP]"));
        // binds has the largest weight: darkest, white text; <b> at 0.1/0.4 = 0.25
        assert!(html.contains("background-color:rgb(8,48,107);color:#fff\" title=\"0.4000\">binds"));
        let quarter = fill(0.25);
        assert_eq!(quarter, "rgb(193,203,218)");
        assert!(html.contains(&format!("background-color:{quarter};color:#000")));
    }

    #[test]
    fn svg_is_well_formed_and_escaped() {
        let svg = render_svg(&[sentence(), sentence()]);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("<b>"));
        assert_eq!(
            svg.matches("<g>").count(),
            6,
            "three drawn words per sentence"
        );
        assert_eq!(svg.matches("<g>").count(), svg.matches("</g>").count());
        assert!(svg.contains(">@GENE$</text>"));
    }

    #[test]
    fn long_sentences_wrap_within_the_width() {
        let words = (0..200)
            .map(|i| word(&format!("word{i}"), 0.01, WordKind::Text))
            .collect();
        let svg = render_svg(&[HeatmapSentence {
            caption: "long".into(),
            words,
        }]);
        for rect in svg.split("<rect x=\"").skip(1) {
            let x: f64 = rect.split('"').next().unwrap().parse().unwrap();
            let width: f64 = rect
                .split("width=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap()
                .parse()
                .unwrap();
            assert!(x + width <= WIDTH - MARGIN + 1e-9, "box at {x} + {width}");
        }
        let height: f64 = svg
            .split("height=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            height > 10.0 * LINE_HEIGHT,
            "200 words need many lines: {height}"
        );
    }
}
