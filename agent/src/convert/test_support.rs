//! Running one reader of the walk on a YAML snippet, with its refusals and
//! notes rendered as the user sees them: `path (line N): message`.

use super::walk::{Cx, Field};
use crate::config::{DocPath, Issue, line_of};

pub(super) struct Walked<T> {
    pub out: T,
    pub refusals: Vec<String>,
    pub notes: Vec<String>,
}

pub(super) fn walk<T>(yaml: &str, read: impl FnOnce(&mut Cx, &Field<'_>) -> T) -> Walked<T> {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test YAML");
    let mut cx = Cx::default();
    let out = read(&mut cx, &Field::new(DocPath::root(), &value));
    let render = |found: &[(DocPath, String)]| -> Vec<String> {
        found
            .iter()
            .map(|(path, message)| {
                Issue {
                    line: line_of(yaml, path),
                    path: path.to_string(),
                    message: message.clone(),
                }
                .to_string()
            })
            .collect()
    };
    Walked {
        refusals: render(&cx.refusals),
        notes: render(&cx.notes),
        out,
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
pub(super) fn line(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}
