//! Chat templates: the Jinja `tokenizer.chat_template` a GGUF carries, rendered with minijinja and
//! split into `(text, parse_special)` parts for [`Tokenizer::encode_parts`], so that message text
//! never becomes control tokens, whatever the template does to it.
//!
//! minijinja is sandboxed by construction: a template sees plain values (strings, numbers, lists,
//! maps) and the few functions registered here, never host objects, files or the environment.
//! The environment mirrors what Hugging Face's `apply_chat_template` offers: `trim_blocks` and
//! `lstrip_blocks`, loop controls, Python string and dict methods (`.strip()`, `.split()`,
//! `.startswith()`, `.items()`), `raise_exception(msg)`, `strftime_now(fmt)` and its `tojson`.
//! Fuel (which minijinja also charges for the size of the values built), its recursion limit and
//! an output cap bound the work: a template that loops, recurses, writes or grows a string
//! without end fails with [`Error::Template`] instead of hanging. One hole remains: list
//! concatenation is lazy in minijinja and not charged, so a template that doubles a list in a
//! loop (`ns.l = ns.l + ns.l`) and then takes its `length` runs for minutes and then exhausts
//! memory; a template from an untrusted file is untrusted code in that one respect.
//!
//! # How message text is kept out of control tokens
//!
//! Before rendering, a marker character `M` that occurs nowhere in the template, the messages or
//! the special tokens (a Unicode noncharacter, normally U+FDD0) is written into message text
//! right after the first character of every place where a special token's text begins, compared
//! character by character up to case (so `| upper`/`| lower`/`| title` cannot assemble one either),
//! and also where the text ends with the beginning of a special token. After rendering, the
//! output is split at special-token text exactly as the tokenizer would split it: every match can
//! only come from the template's own markup or from `bos_token`/`eos_token`, since any stretch of
//! message text that could spell a token has an `M` in it. The remaining text has its markers
//! removed and is marked "do not parse special tokens".
//!
//! What cannot be told apart, and why it is harmless:
//! - A special token assembled by the template out of its own text and message text: markup that
//!   ends with the start of a token right before the content (`<|im_` + `end|>`), or a filter that
//!   inserts token characters (`replace('x', '|')`, a character lookup table). The template then
//!   writes the control token itself; it is part of the model file, trusted as its weights are,
//!   and no published chat template does this.
//! - A one-character special token cannot be broken by a marker: message text containing that
//!   character yields the token (the guard needs tokens of two characters or more).
//! - Message text that contains special-token text (in any case) is one marker longer per
//!   occurrence while the template runs: `| length` and slices `[:n]` count it, and a template
//!   that splits content on a control token (`content.split('</think>')`) no longer finds it.
//!   The rendering then differs from Hugging Face's only for such text, which is exactly the text
//!   that would otherwise inject control tokens.
//! - User-defined (not control) tokens in message text are still recognised by the tokenizer, as
//!   llama.cpp does for every prompt.

use std::io::{self, Write};
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Object, Value};
use minijinja::{context, Environment, ErrorKind};

use crate::error::{Error, Result};
use crate::tokenizer::{attr, Tokenizer};

mod functions;

/// Steps one rendering may run (minijinja's fuel, which also charges for the size of values
/// built), plus one per byte of message text. Hugging Face templates take about 30 per message
/// and one per 16 bytes of content, so long conversations stay far below it; a runaway loop, or a
/// string doubled in a loop, stops within a fraction of a second.
pub const FUEL_BASE: u64 = 1_000_000;

/// Output one rendering may write, on top of [`OUTPUT_PER_INPUT_BYTE`] bytes per byte of message
/// text: a prompt that large could never fit a context window.
pub const OUTPUT_BASE: usize = 16 << 20;
/// See [`OUTPUT_BASE`].
pub const OUTPUT_PER_INPUT_BYTE: usize = 8;

/// One chat message as the template sees it (`message['role']`, `message['content']`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The variables a chat template gets besides `messages`.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    pub bos_token: &'a str,
    pub eos_token: &'a str,
    /// End with the header of the assistant's turn (what generation needs).
    pub add_generation_prompt: bool,
}

/// A piece of prompt text and whether special tokens may be parsed in it.
pub type Part = (String, bool);

/// The texts of the tokens the tokenizer recognises in markup (control, unknown and
/// user-defined tokens), as [`render_parts`] takes them.
pub fn special_texts(tok: &Tokenizer) -> Vec<&str> {
    (0..tok.vocab_size() as u32)
        .filter(|&id| {
            tok.token_attr(id)
                .is_ok_and(|a| a & (attr::CONTROL | attr::UNKNOWN | attr::USER_DEFINED) != 0)
        })
        .filter_map(|id| tok.token_text(id).ok())
        .collect()
}

/// Render `template` as plain text (no markers, no split): what Hugging Face's
/// `apply_chat_template(..., tokenize=False)` returns.
pub fn render(template: &str, messages: &[ChatMessage], vars: TemplateVars<'_>) -> Result<String> {
    run(template, messages, vars)
}

/// Render `template` and split the result into markup (`true`: special tokens are parsed) and
/// text (`false`), so that no special token in `specials` can come from message text (see the
/// module documentation). The parts joined equal [`render`]'s text unless message text contains
/// special-token text.
pub fn render_parts(
    template: &str,
    messages: &[ChatMessage],
    vars: TemplateVars<'_>,
    specials: &[&str],
) -> Result<Vec<Part>> {
    let mut specials: Vec<&str> = specials.iter().copied().filter(|s| !s.is_empty()).collect();
    // Longest first, as the tokenizer matches them.
    specials.sort_by_key(|s| std::cmp::Reverse(s.len()));
    specials.dedup();
    let marker = pick_marker(template, messages, vars, &specials)?;
    let guarded: Vec<ChatMessage> = messages
        .iter()
        .map(|m| ChatMessage {
            role: guard(&m.role, &specials, marker),
            content: guard(&m.content, &specials, marker),
        })
        .collect();
    let text = run(template, &guarded, vars)?;
    Ok(split(&text, &specials, marker))
}

/// The first candidate marker that occurs nowhere in the input: the 32 noncharacters of the
/// Arabic Presentation Forms block, then the private-use plane 15.
fn pick_marker(
    template: &str,
    messages: &[ChatMessage],
    vars: TemplateVars<'_>,
    specials: &[&str],
) -> Result<char> {
    let texts = || {
        [template, vars.bos_token, vars.eos_token]
            .into_iter()
            .chain(
                messages
                    .iter()
                    .flat_map(|m| [m.role.as_str(), m.content.as_str()]),
            )
            .chain(specials.iter().copied())
    };
    (0xFDD0..=0xFDEF)
        .chain(0xF0000..=0xFFFFD)
        .filter_map(char::from_u32)
        .find(|&c| texts().all(|t| !t.contains(c)))
        .ok_or_else(|| Error::Template("no free marker character for the message text".into()))
}

/// Two characters equal up to case (`ı` and `i` both upper-case to `I`).
fn same_up_to_case(a: char, b: char) -> bool {
    a == b || a.to_lowercase().eq(b.to_lowercase()) || a.to_uppercase().eq(b.to_uppercase())
}

/// Does a special token begin at the start of `rest` (up to case), or does `rest` end with the
/// beginning of one?
fn token_starts(rest: &str, special: &str) -> bool {
    let mut r = rest.chars();
    for s in special.chars() {
        match r.next() {
            Some(c) if same_up_to_case(c, s) => {}
            Some(_) => return false,
            None => return true,
        }
    }
    true
}

/// `text` with `marker` after the first character of every place a special token could begin.
fn guard(text: &str, specials: &[&str], marker: char) -> String {
    let breakable: Vec<&str> = specials
        .iter()
        .copied()
        .filter(|s| s.chars().nth(1).is_some())
        .collect();
    let firsts: Vec<char> = breakable.iter().filter_map(|s| s.chars().next()).collect();
    let mut out = String::with_capacity(text.len() + 8);
    for (i, c) in text.char_indices() {
        out.push(c);
        if firsts.iter().any(|&f| same_up_to_case(c, f))
            && breakable.iter().any(|s| token_starts(&text[i..], s))
        {
            out.push(marker);
        }
    }
    out
}

/// Split rendered text at special-token text (longest token first, leftmost matches: the
/// tokenizer's own order) and strip the markers from the rest.
fn split(text: &str, specials: &[&str], marker: char) -> Vec<Part> {
    enum Frag<'t> {
        Text(&'t str),
        Special(&'t str),
    }
    let mut frags = vec![Frag::Text(text)];
    for &s in specials {
        if !text.contains(s) {
            continue;
        }
        let mut next = Vec::with_capacity(frags.len() + 2);
        for f in frags {
            let Frag::Text(mut t) = f else {
                next.push(f);
                continue;
            };
            while let Some(p) = t.find(s) {
                if p > 0 {
                    next.push(Frag::Text(&t[..p]));
                }
                next.push(Frag::Special(&t[p..p + s.len()]));
                t = &t[p + s.len()..];
            }
            if !t.is_empty() {
                next.push(Frag::Text(t));
            }
        }
        frags = next;
    }
    let mut parts: Vec<Part> = Vec::with_capacity(frags.len());
    for f in frags {
        match f {
            Frag::Special(s) => parts.push((s.to_string(), true)),
            Frag::Text(t) => {
                let t: String = t.chars().filter(|&c| c != marker).collect();
                match parts.last_mut() {
                    Some((prev, false)) => prev.push_str(&t),
                    _ if t.is_empty() => {}
                    _ => parts.push((t, false)),
                }
            }
        }
    }
    parts
}

/// A message as a template value: a map with the keys `role` and `content`, in that order (as
/// Python's dicts keep them, for `message.items()` and `tojson`).
#[derive(Debug)]
struct MessageValue {
    role: Value,
    content: Value,
}

impl Object for MessageValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "role" => Some(self.role.clone()),
            "content" => Some(self.content.clone()),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["role", "content"])
    }
}

/// A writer that refuses to grow past `limit` bytes.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(b.len()) > self.limit {
            return Err(io::Error::other("output limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run(template: &str, messages: &[ChatMessage], vars: TemplateVars<'_>) -> Result<String> {
    let input: usize = messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum();
    let fuel = FUEL_BASE.saturating_add(input as u64);
    let mut env = environment()?;
    env.set_fuel(Some(fuel));
    let tmpl = env.template_from_str(template).map_err(template_error)?;
    let msgs: Vec<Value> = messages
        .iter()
        .map(|m| {
            Value::from_object(MessageValue {
                role: Value::from(m.role.as_str()),
                content: Value::from(m.content.as_str()),
            })
        })
        .collect();
    let limit = input
        .saturating_mul(OUTPUT_PER_INPUT_BYTE)
        .saturating_add(OUTPUT_BASE);
    let mut out = Capped {
        buf: Vec::new(),
        limit,
    };
    let ctx = context! {
        messages => msgs,
        bos_token => vars.bos_token,
        eos_token => vars.eos_token,
        add_generation_prompt => vars.add_generation_prompt,
    };
    match tmpl.render_captured_to(ctx, &mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::WriteFailure => {
            return Err(Error::Template(format!(
                "the template writes more than {limit} bytes; it is not a usable chat template"
            )))
        }
        Err(e) => return Err(template_error(e)),
    }
    String::from_utf8(out.buf)
        .map_err(|_| Error::Template("the template wrote invalid UTF-8".into()))
}

fn template_error(e: minijinja::Error) -> Error {
    let what = match e.kind() {
        ErrorKind::OutOfFuel => "the template runs past its step limit (a loop that does not end, \
                                 or values that grow without bound); pass another template"
            .to_string(),
        ErrorKind::InvalidOperation if e.detail().is_some_and(|d| d.starts_with(RAISED)) => {
            // The template's own verdict on the messages (e.g. roles that do not alternate).
            e.detail().unwrap_or_default()[RAISED.len()..].to_string()
        }
        _ => e.to_string(),
    };
    Error::Template(what)
}

const RAISED: &str = "the template refuses these messages: ";

fn environment() -> Result<Environment<'static>> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(template_error)?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(functions::methods);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("{RAISED}{msg}"),
            ))
        },
    );
    env.add_function("strftime_now", functions::strftime_now);
    env.add_filter("tojson", functions::tojson);
    env.add_filter("trim", functions::trim);
    Ok(env)
}

#[cfg(test)]
mod tests;
