//! PubMed-style boolean queries over a document's title and abstract: `Protein OR Gene`,
//! `drug* AND (interaction OR "adverse effect")`, `kinase NOT review`.
//!
//! Grammar (PubMed's: operators are evaluated left to right, parentheses nest, two terms
//! side by side are joined by AND):
//!
//! ```text
//! query  := group ((AND | OR | NOT)? group)*
//! group  := term | "quoted phrase" | ( query )
//! ```
//!
//! Operators are upper-case words; terms are case-insensitive and match whole words of the
//! text (words are runs of letters and digits); a term ending in `*` matches every word it
//! begins (PubMed's truncation); a term or phrase of several words (`"protein kinase"`,
//! `IL-2`) matches those words in a row.

use std::fmt;

/// A query that cannot be parsed; `position` is the 1-based character column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query, character {position}: {message}")]
pub struct QueryError {
    pub position: usize,
    pub message: String,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Words in a row (one word for a plain term); the last may be a prefix (`*`).
    Phrase {
        words: Vec<String>,
        prefix: bool,
    },
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
    /// Left and not right (PubMed's binary NOT).
    Not(Box<Query>, Box<Query>),
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Phrase { words, prefix } => {
                let star = if *prefix { "*" } else { "" };
                if words.len() == 1 {
                    write!(f, "{}{star}", words[0])
                } else {
                    write!(f, "\"{}{star}\"", words.join(" "))
                }
            }
            Query::And(a, b) => write!(f, "({a} AND {b})"),
            Query::Or(a, b) => write!(f, "({a} OR {b})"),
            Query::Not(a, b) => write!(f, "({a} NOT {b})"),
        }
    }
}

/// The lower-cased words of `text`: maximal runs of alphanumeric characters.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Query {
    /// Parses `text`; errors name the character where parsing failed.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens: &tokens,
            next: 0,
            end: text.chars().count() + 1,
        };
        let query = parser.query()?;
        if let Some(token) = parser.peek() {
            return Err(QueryError {
                position: token.position,
                message: "unmatched `)`".into(),
            });
        }
        Ok(query)
    }

    /// Whether a document whose lower-cased words are `words` (see [`words`]) matches.
    pub fn matches(&self, words: &[String]) -> bool {
        match self {
            Query::Phrase {
                words: phrase,
                prefix,
            } => phrase_occurs(phrase, *prefix, words),
            Query::And(a, b) => a.matches(words) && b.matches(words),
            Query::Or(a, b) => a.matches(words) || b.matches(words),
            Query::Not(a, b) => a.matches(words) && !b.matches(words),
        }
    }
}

fn phrase_occurs(phrase: &[String], prefix: bool, words: &[String]) -> bool {
    let n = phrase.len();
    if n == 0 || words.len() < n {
        return false;
    }
    words.windows(n).any(|window| {
        window.iter().zip(phrase).enumerate().all(|(i, (w, p))| {
            if prefix && i + 1 == n {
                w.starts_with(p.as_str())
            } else {
                w == p
            }
        })
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenKind {
    Open,
    Close,
    And,
    Or,
    Not,
    /// A term or a quoted phrase: its words and whether it ends in `*`.
    Words(Vec<String>, bool),
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// 1-based character column.
    position: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let kind = match c {
            '(' => {
                i += 1;
                TokenKind::Open
            }
            ')' => {
                i += 1;
                TokenKind::Close
            }
            '"' => {
                let close = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '"')
                    .ok_or_else(|| QueryError {
                        position,
                        message: "quoted phrase is not closed".into(),
                    })?;
                let inner: String = chars[i + 1..i + 1 + close].iter().collect();
                i += close + 2;
                term(inner.trim(), position)?
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"()\"".contains(chars[i]) {
                    i += 1;
                }
                let raw: String = chars[start..i].iter().collect();
                match raw.as_str() {
                    "AND" => TokenKind::And,
                    "OR" => TokenKind::Or,
                    "NOT" => TokenKind::Not,
                    _ => term(&raw, position)?,
                }
            }
        };
        tokens.push(Token { kind, position });
    }
    Ok(tokens)
}

fn term(raw: &str, position: usize) -> Result<TokenKind, QueryError> {
    let prefix = raw.ends_with('*');
    let body = raw.trim_end_matches('*');
    if body.contains('*') {
        return Err(QueryError {
            position,
            message: format!("`{raw}`: `*` is allowed only at the end of a term"),
        });
    }
    let found = words(body);
    if found.is_empty() {
        return Err(QueryError {
            position,
            message: format!("`{raw}` has no letters or digits to search for"),
        });
    }
    Ok(TokenKind::Words(found, prefix))
}

struct Parser<'a> {
    tokens: &'a [Token],
    next: usize,
    /// Column just past the text, for "unexpected end" errors.
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    /// `group ((AND | OR | NOT)? group)*`, folded left to right.
    fn query(&mut self) -> Result<Query, QueryError> {
        let mut left = self.group()?;
        while let Some(token) = self.peek() {
            let operator = match token.kind {
                TokenKind::Close => break,
                TokenKind::And | TokenKind::Or | TokenKind::Not => {
                    let kind = token.kind.clone();
                    self.next += 1;
                    kind
                }
                // two groups side by side: PubMed joins them with AND
                TokenKind::Open | TokenKind::Words(..) => TokenKind::And,
            };
            let right = Box::new(self.group()?);
            let l = Box::new(left);
            left = match operator {
                TokenKind::Or => Query::Or(l, right),
                TokenKind::Not => Query::Not(l, right),
                _ => Query::And(l, right),
            };
        }
        Ok(left)
    }

    fn group(&mut self) -> Result<Query, QueryError> {
        let Some(token) = self.peek().cloned() else {
            return Err(QueryError {
                position: self.end,
                message: "unexpected end of query: a term, phrase or `(` is missing".into(),
            });
        };
        self.next += 1;
        match token.kind {
            TokenKind::Words(words, prefix) => Ok(Query::Phrase { words, prefix }),
            TokenKind::Open => {
                let inner = self.query()?;
                match self.peek() {
                    Some(Token {
                        kind: TokenKind::Close,
                        ..
                    }) => {
                        self.next += 1;
                        Ok(inner)
                    }
                    _ => Err(QueryError {
                        position: token.position,
                        message: "`(` is never closed".into(),
                    }),
                }
            }
            TokenKind::Close => Err(QueryError {
                position: token.position,
                message: "`)` where a term was expected".into(),
            }),
            TokenKind::And | TokenKind::Or | TokenKind::Not => Err(QueryError {
                position: token.position,
                message: "operator where a term was expected (AND, OR and NOT join two terms)"
                    .into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(query: &str, text: &str) -> bool {
        Query::parse(query)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .matches(&words(text))
    }

    #[test]
    fn parses_left_to_right_with_parentheses_and_implicit_and() {
        let show = |q: &str| Query::parse(q).map(|q| q.to_string());
        assert_eq!(show("Protein OR Gene").as_deref(), Ok("(protein OR gene)"));
        assert_eq!(
            show("a OR b AND c").as_deref(),
            Ok("((a OR b) AND c)"),
            "PubMed evaluates left to right"
        );
        assert_eq!(show("a OR (b AND c)").as_deref(), Ok("(a OR (b AND c))"));
        assert_eq!(show("a b NOT c").as_deref(), Ok("((a AND b) NOT c)"));
        assert_eq!(
            show("\"Protein Kinase\" OR drug*").as_deref(),
            Ok("(\"protein kinase\" OR drug*)")
        );
        assert_eq!(show("IL-2").as_deref(), Ok("\"il 2\""));
    }

    #[test]
    fn errors_name_the_position() {
        let err = |q: &str| Query::parse(q).expect_err(q);
        assert_eq!(err("protein OR").position, 11);
        assert_eq!(err("(protein OR gene").position, 1);
        assert_eq!(err("protein) OR gene").position, 8);
        assert_eq!(err("gene AND \"protein kinase").position, 10);
        assert_eq!(err("OR gene").position, 1);
        assert_eq!(err("gene AND AND drug").position, 10);
        assert_eq!(err("pro*tein").position, 1);
        assert_eq!(err("gene OR -").position, 9);
        assert!(err("").message.contains("unexpected end"));
        assert!(err("a (b").to_string().contains("character 3"));
    }

    #[test]
    fn matches_whole_words_case_insensitively() {
        let text = "Naloxone reverses the antihypertensive effect of Clonidine in protein-kinase C assays.";
        assert!(matches("clonidine", text));
        assert!(matches("CLONIDINE AND naloxone", text));
        assert!(!matches("clonidin", text), "whole words only");
        assert!(matches("clonidin*", text), "truncation");
        assert!(matches("Protein OR Gene", text));
        assert!(!matches("Gene OR Drug", text));
        assert!(matches("\"protein kinase\"", text), "hyphen splits words");
        assert!(!matches("\"kinase protein\"", text), "phrase order matters");
        assert!(matches("protein NOT gene", text));
        assert!(!matches("protein NOT (kinase OR gene)", text));
        assert!(matches("(gene OR drug) OR effect", text));
        assert!(!matches("gene OR drug AND effect", text));
        assert!(matches("gene OR effect AND naloxone", text));
    }
}
