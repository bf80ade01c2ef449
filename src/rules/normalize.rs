//! Text normalisation shared by messages and keywords: lower case, accents folded,
//! whitespace collapsed and trimmed. A message is normalised once; every keyword and
//! every regex works on that form.

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// The normalised form of `text`: "  Instruções\tde  INSTALAÇÃO " → "instrucoes de instalacao".
///
/// Compatibility decomposition (NFKD) splits accents from their letters and maps look-alikes
/// (full-width letters, ligatures such as "ﬁ") to plain ones; the accents are then dropped.
pub fn normalize(text: &str) -> String {
    let mut out = fold_pass(text);
    // Lower-casing can produce characters that decompose further (and vice versa), so the
    // rare output that is not yet stable goes through again; two passes settle real text.
    for _ in 0..3 {
        if is_normalized(&out) {
            break;
        }
        out = fold_pass(&out);
    }
    out
}

/// One pass: each character is decomposed on its own (dropping every combining mark makes
/// the canonical reordering of a whole-string NFKD unnecessary), lower-cased and folded.
fn fold_pass(text: &str) -> String {
    let mut out = Collapsed::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
            continue;
        }
        decompose_compatible(c, |part| {
            for lower in part.to_lowercase() {
                if !is_combining_mark(lower) {
                    fold_letter(lower).for_each(|folded| out.push(folded));
                }
            }
        });
    }
    out.text
}

/// Whether another pass would change nothing. ASCII output is final by construction.
fn is_normalized(text: &str) -> bool {
    text.is_ascii() || text.chars().filter(|c| !c.is_ascii()).all(is_stable)
}

fn is_stable(c: char) -> bool {
    let mut decomposes_to_itself = true;
    decompose_compatible(c, |part| decomposes_to_itself &= part == c);
    decomposes_to_itself
        && !is_combining_mark(c)
        && !c.is_whitespace()
        && c.to_lowercase().eq(std::iter::once(c))
        && matches!(fold_letter(c), FoldedChars::One(f) if f == c)
}

/// A `text_any` / `text_none` entry in normalised form; a trailing `*` matches a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Keyword {
    pub text: String,
    pub prefix: bool,
}

impl Keyword {
    /// `None` when nothing is left to match ("", "  ", "*").
    pub fn parse(entry: &str) -> Option<Keyword> {
        let trimmed = entry.trim();
        let (body, prefix) = match trimmed.strip_suffix('*') {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        let text = normalize(body);
        (!text.is_empty()).then_some(Keyword { text, prefix })
    }
}

/// Whether `c` belongs to a word: word boundaries lie between a word character and anything else.
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// Letters that have no decomposition but a plain spelling people type instead.
fn fold_letter(c: char) -> FoldedChars {
    match c {
        'ß' => FoldedChars::Two('s', 's'),
        'æ' => FoldedChars::Two('a', 'e'),
        'œ' => FoldedChars::Two('o', 'e'),
        'þ' => FoldedChars::Two('t', 'h'),
        'ø' => FoldedChars::One('o'),
        'đ' | 'ð' => FoldedChars::One('d'),
        'ł' => FoldedChars::One('l'),
        'ı' => FoldedChars::One('i'),
        other => FoldedChars::One(other),
    }
}

enum FoldedChars {
    One(char),
    Two(char, char),
    Done,
}

impl Iterator for FoldedChars {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        match std::mem::replace(self, FoldedChars::Done) {
            FoldedChars::One(c) => Some(c),
            FoldedChars::Two(a, b) => {
                *self = FoldedChars::One(b);
                Some(a)
            }
            FoldedChars::Done => None,
        }
    }
}

/// Text being built with every run of whitespace as one space, none leading or trailing.
struct Collapsed {
    text: String,
    pending_space: bool,
}

impl Collapsed {
    fn with_capacity(capacity: usize) -> Collapsed {
        Collapsed {
            text: String::with_capacity(capacity),
            pending_space: false,
        }
    }

    fn push(&mut self, c: char) {
        if c.is_whitespace() {
            self.pending_space = !self.text.is_empty();
        } else {
            if self.pending_space {
                self.text.push(' ');
                self.pending_space = false;
            }
            self.text.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn folds_case_accents_and_whitespace() {
        assert_eq!(
            normalize("  Instruções\tde \n INSTALAÇÃO "),
            "instrucoes de instalacao"
        );
        assert_eq!(normalize("MANUAL?"), "manual?");
        assert_eq!(normalize("Straße Ærø"), "strasse aero");
        assert_eq!(normalize("Ｍａｎｕａｌ"), "manual");
        assert_eq!(normalize("İstanbul"), "istanbul");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \t "), "");
    }

    #[test]
    fn keywords_keep_a_trailing_star_as_prefix() {
        let kw = Keyword::parse(" Instal* ").unwrap();
        assert_eq!((kw.text.as_str(), kw.prefix), ("instal", true));
        let kw = Keyword::parse("Instruções  de instalação").unwrap();
        assert_eq!(
            (kw.text.as_str(), kw.prefix),
            ("instrucoes de instalacao", false)
        );
        assert_eq!(Keyword::parse(" * "), None);
        assert_eq!(Keyword::parse(""), None);
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent_and_clean(text in "\\PC{0,40}|[ \\tA-Za-zÀ-ÿßæøœ\u{0300}-\u{036f}]{0,40}") {
            let once = normalize(&text);
            prop_assert_eq!(normalize(&once), once.clone());
            prop_assert!(once.chars().all(|c| c.to_lowercase().eq(std::iter::once(c))), "upper case left in {:?}", once);
            prop_assert!(!once.chars().any(is_combining_mark), "combining mark left in {:?}", once);
            prop_assert!(!once.contains("  "));
            prop_assert!(once.chars().all(|c| c == ' ' || !c.is_whitespace()));
            prop_assert_eq!(once.trim(), once.as_str());
        }
    }
}
