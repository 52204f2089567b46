//! The commands a Markdown page shows: the lines of its shell code blocks,
//! and the inline code spans that name one of the project's own commands.
//!
//! A fenced block tagged `sh`, `bash`, `shell` or `console` holds commands
//! (in one with `$ ` prompts, only the prompted lines: the rest is output).
//! An untagged block holds diagrams and output as often as commands, so only
//! its `$ ` lines and the lines that start with a program the checker knows
//! are taken. Inline spans are taken when they start with `weir`, `cargo` or
//! `kubectl`: the prose names commands that way, often with placeholders.

/// Where a command was shown, which decides how strictly it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// A line of a code block: meant to be typed as it is.
    Block,
    /// An inline code span in prose: may leave out required arguments or
    /// stand for them with placeholders (`FILE`, `[-o OUT]`).
    Inline,
}

/// One command as a page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocCommand {
    /// 1-based line of the page where the command starts.
    pub line: usize,
    pub text: String,
    pub shown: Shown,
}

/// Programs whose lines in an untagged block are commands.
pub const KNOWN_PROGRAMS: &[&str] = &["weir", "cargo", "kubectl", "curl", "skopeo", "ctr", "kind"];

/// Programs whose inline spans are commands.
const INLINE_PROGRAMS: &[&str] = &["weir", "cargo", "kubectl"];

/// Every command `markdown` shows, in page order.
pub fn commands(markdown: &str) -> Vec<DocCommand> {
    let mut out = Vec::new();
    // An inline span left open at the end of a line, with the line it began on.
    let mut open: Option<(usize, String)> = None;
    let mut lines = markdown.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            open = None;
            let body: Vec<(usize, &str)> = lines
                .by_ref()
                .take_while(|(_, l)| !l.trim_start().starts_with("```"))
                .collect();
            out.extend(block_commands(info.trim(), &body));
        } else {
            out.extend(inline_commands(&mut open, number, line));
        }
    }
    out
}

fn block_commands(info: &str, body: &[(usize, &str)]) -> Vec<DocCommand> {
    let language = info.split_whitespace().next().unwrap_or("");
    let shell = matches!(language, "sh" | "bash" | "shell" | "console");
    if !shell && !language.is_empty() {
        return Vec::new();
    }
    let prompted = body.iter().any(|(_, l)| l.trim_start().starts_with("$ "));
    let mut out = Vec::new();
    let mut lines = body.iter();
    while let Some(&(number, line)) = lines.next() {
        let line = line.trim();
        let text = match line.strip_prefix("$ ") {
            Some(command) => command,
            None if prompted => continue,
            None if line.is_empty() || line.starts_with('#') => continue,
            None if shell || starts_with_program(line, KNOWN_PROGRAMS) => line,
            None => continue,
        };
        // A trailing backslash continues the command on the next line.
        let mut text = text.to_owned();
        while let Some(head) = text.strip_suffix('\\') {
            let head = head.trim_end();
            text = match lines.next() {
                Some((_, next)) => format!("{head} {}", next.trim()),
                None => head.to_owned(),
            };
        }
        out.push(DocCommand {
            line: number,
            text: text.trim().to_owned(),
            shown: Shown::Block,
        });
    }
    out
}

/// The spans `line` closes; a span may go on over the lines of its
/// paragraph (prose wraps inside one), a blank line ends it.
fn inline_commands(
    open: &mut Option<(usize, String)>,
    number: usize,
    line: &str,
) -> Vec<DocCommand> {
    if line.trim().is_empty() {
        *open = None;
        return Vec::new();
    }
    let mut out = Vec::new();
    // Every backtick opens or closes a span.
    let mut pieces = line.split('`');
    let first = pieces.next().unwrap_or_default();
    if let Some((_, text)) = open {
        text.push(' ');
        text.push_str(first.trim());
    }
    for piece in pieces {
        match open.take() {
            Some((start, text)) if starts_with_program(&text, INLINE_PROGRAMS) => {
                out.push(DocCommand {
                    line: start,
                    text: text.trim().to_owned(),
                    shown: Shown::Inline,
                });
            }
            Some(_) => {}
            None => *open = Some((number, piece.to_owned())),
        }
    }
    out
}

/// Whether `text`'s first word is one of `programs` and more follows it.
fn starts_with_program(text: &str, programs: &[&str]) -> bool {
    let mut words = text.split_whitespace();
    words.next().is_some_and(|w| programs.contains(&w)) && words.next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(markdown: &str) -> Vec<(usize, String, Shown)> {
        commands(markdown)
            .into_iter()
            .map(|c| (c.line, c.text, c.shown))
            .collect()
    }

    #[test]
    fn shell_blocks_give_every_line_but_comments() {
        let page = "intro\n\n```sh\n# build first\ncargo xtask build\nweir check-config a.yaml   # ok\n```\n";
        assert_eq!(
            texts(page),
            vec![
                (5, "cargo xtask build".to_owned(), Shown::Block),
                (
                    6,
                    "weir check-config a.yaml   # ok".to_owned(),
                    Shown::Block
                ),
            ]
        );
    }

    #[test]
    fn prompted_blocks_give_the_prompted_lines_only() {
        let page = "```\n$ curl -s localhost:15000/datapath\n{ \"kernel\": 1 }\n```\n";
        assert_eq!(
            texts(page),
            vec![(
                2,
                "curl -s localhost:15000/datapath".to_owned(),
                Shown::Block
            )]
        );
    }

    #[test]
    fn untagged_blocks_give_lines_of_known_programs_and_other_languages_nothing() {
        let page = "```\n app ─> weir\ncargo xtask bench mesh --rounds 4\n--mesh-pod-cidrs=10.0.0.0/8\n```\n\
                    ```yaml\nweir run: yes\n```\n```text\nkubectl get pods\n```\n";
        assert_eq!(
            texts(page),
            vec![(
                3,
                "cargo xtask bench mesh --rounds 4".to_owned(),
                Shown::Block
            )]
        );
    }

    #[test]
    fn continued_lines_are_one_command() {
        let page = "```\ncargo xtask bench intercept --scenarios a \\\n    --loads b \\\n    --no-docs\nweir capabilities\n```\n";
        assert_eq!(
            texts(page),
            vec![
                (
                    2,
                    "cargo xtask bench intercept --scenarios a --loads b --no-docs".to_owned(),
                    Shown::Block
                ),
                (5, "weir capabilities".to_owned(), Shown::Block),
            ]
        );
    }

    #[test]
    fn inline_spans_naming_a_command_and_nothing_else() {
        let page = "Run `weir check-config FILE`, then `cargo xtask test`; `weir.dev/enroll`, `weir` and `curl -s x` are not taken.\n";
        assert_eq!(
            texts(page),
            vec![
                (1, "weir check-config FILE".to_owned(), Shown::Inline),
                (1, "cargo xtask test".to_owned(), Shown::Inline),
            ]
        );
    }

    #[test]
    fn inline_spans_go_on_over_wrapped_lines_of_a_paragraph() {
        let page = "run `weir proxy --config\n  FILE`, the proxy; `weir\n\nrun` is not one span.\n";
        assert_eq!(
            texts(page),
            vec![(1, "weir proxy --config FILE".to_owned(), Shown::Inline)]
        );
    }

    #[test]
    fn indented_fences_are_blocks_too() {
        let page = "- a list item:\n  ```\n  weir proxy --config weir.yaml\n  ```\n";
        assert_eq!(
            texts(page),
            vec![(3, "weir proxy --config weir.yaml".to_owned(), Shown::Block)]
        );
    }
}
