//! Chat webhooks beside Slack and Teams: `mattermost`, `rocketchat`, `googlechat` and `discord`,
//! one file each for what differs (payload, size limit, reply), this module for what they share.
//!
//! Every platform renders Markdown and parses mentions, so event data never reaches them as
//! markup: the title goes out with every Markdown character escaped (or inside the code block,
//! where a platform has no escapes), and the body — use a built-in `text` template, e.g.
//! `hooker.falco.text` — inside a fenced code block, where nothing is formatted or mentioned. A body
//! longer than the platform's message limit is split over several messages: nothing is dropped.
//! Invariant: the webhook URL carries the platform's secret; it never reaches logs, errors or
//! previews.

mod discord;
mod googlechat;
mod mattermost;
mod rocketchat;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::api_client::{self, ApiRequest, HeaderValues, Remote, RemoteKeys};
use super::{Action, ActionError, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

pub use discord::build as build_discord;
pub use googlechat::build as build_googlechat;
pub use mattermost::build as build_mattermost;
pub use rocketchat::build as build_rocketchat;

/// The keys every chat webhook takes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ChatConfig {
    /// The incoming-webhook URL. Secret.
    url: Secret,
    /// Limit for one attempt; default 30 s.
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    /// Verify the server's certificate (default true).
    #[serde(
        default = "api_client::yes",
        deserialize_with = "api_client::de_tls_verify"
    )]
    tls_verify: bool,
    /// Extra CA bundle (PEM) to trust, e.g. for a self-hosted server.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// Extra request headers.
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
    /// The name the message is posted under, where the platform lets a webhook choose it.
    #[serde(default)]
    username: Option<String>,
    /// The avatar, where the platform lets a webhook choose it.
    #[serde(default)]
    icon_url: Option<String>,
    /// The channel, where the platform lets a webhook choose it (Mattermost, Rocket.Chat).
    #[serde(default)]
    channel: Option<String>,
}

/// How one platform differs.
trait Platform: Send + Sync + 'static {
    /// The action's `type`.
    const KIND: &'static str;
    /// The most characters one message may carry.
    const LIMIT: usize;
    /// The title as the first line of a message, or `None` to put it inside the code block.
    fn heading(title: &str) -> Option<String>;
    /// The JSON body of one message with `text` as its content.
    fn payload(&self, text: String) -> Value;
    /// The URL to post one message of `message` to (Google Chat threads by finding).
    fn url(&self, base: &reqwest::Url, _message: &Message) -> reqwest::Url {
        base.clone()
    }
}

/// The optional identity keys, as a platform names them in its payload.
struct Identity {
    username: Option<String>,
    icon_url: Option<String>,
    channel: Option<String>,
}

impl Identity {
    fn insert(&self, payload: &mut serde_json::Map<String, Value>, names: [&str; 3]) {
        for (name, value) in names
            .into_iter()
            .zip([&self.username, &self.icon_url, &self.channel])
        {
            if let Some(value) = value.as_ref().filter(|v| !v.is_empty())
                && !name.is_empty()
            {
                payload.insert(name.into(), value.clone().into());
            }
        }
    }
}

struct Chat<P> {
    name: String,
    url: reqwest::Url,
    remote: Remote,
    platform: P,
}

/// Builds a chat action: the shared keys, then `make` for the platform's own part.
fn build<P: Platform>(
    config: &ActionConfig,
    make: impl FnOnce(Identity) -> P,
) -> Result<Built, Diagnostic> {
    let (settings, mut warnings) = super::settings::<ChatConfig>(config)?;
    let url = super::http::parse_url(config, "url", settings.url.expose())?;
    let remote = Remote::build(
        config,
        RemoteKeys {
            timeout: settings.timeout,
            tls_verify: settings.tls_verify,
            ca_file: settings.ca_file.as_deref(),
            headers: &settings.headers,
        },
        &mut warnings,
    )?;
    let platform = make(Identity {
        username: settings.username,
        icon_url: settings.icon_url,
        channel: settings.channel,
    });
    Built::new(
        Chat {
            name: config.name.clone(),
            url,
            remote,
            platform,
        },
        warnings,
    )
}

impl<P: Platform> Chat<P> {
    fn requests(&self, message: &Message) -> Vec<ApiRequest> {
        let url = self.platform.url(&self.url, message);
        texts::<P>(&message.title, &message.body)
            .into_iter()
            .map(|text| {
                ApiRequest::post(url.clone(), self.platform.payload(text)).with_secret_url()
            })
            .collect()
    }
}

#[async_trait]
impl<P: Platform> Action for Chat<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        P::KIND
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        api_client::send_all(&self.remote, &self.requests(message)).await
    }

    fn preview(&self, message: &Message) -> Value {
        api_client::preview_all(&self.requests(message))
    }
}

/// The longest title kept, in bytes (a title is one line of a chat message).
const MAX_TITLE: usize = 250;

/// The messages to post: the heading (with "(part i of n)" when split), then the body in a fenced
/// code block, each message at most `P::LIMIT` characters.
fn texts<P: Platform>(title: &str, body: &str) -> Vec<String> {
    let title = one_line(api_client::truncate(title, MAX_TITLE));
    let body = fence_safe(body.trim_end());
    // Room for the heading with a part number, the fences and the newlines between them.
    let heading_room = P::heading(&title).map_or(0, |h| h.chars().count()) + 24;
    let title_room = if P::heading(&title).is_none() {
        title.chars().count() + 24
    } else {
        0
    };
    let room = P::LIMIT
        .saturating_sub(heading_room + title_room + 10)
        .max(64);
    let chunks = split(&body, room);
    let parts = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let part = if parts > 1 {
                format!(" (part {} of {parts})", index + 1)
            } else {
                String::new()
            };
            match P::heading(&format!("{title}{part}")) {
                Some(heading) if chunk.is_empty() => heading,
                Some(heading) => format!("{heading}\n```\n{chunk}\n```"),
                None if chunk.is_empty() => format!("```\n{title}{part}\n```"),
                None => format!("```\n{title}{part}\n\n{chunk}\n```"),
            }
        })
        .collect()
}

/// Splits text into pieces of at most `room` characters, at line ends where it can.
fn split(text: &str, room: usize) -> Vec<String> {
    if text.is_empty() {
        return vec![String::new()];
    }
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    for line in text.split('\n') {
        let mut rest: Vec<char> = line.chars().collect();
        loop {
            let needed = rest.len() + usize::from(current_len > 0);
            if current_len + needed <= room {
                if current_len > 0 {
                    current.push('\n');
                }
                current.extend(rest.iter());
                current_len += needed;
                break;
            }
            if current_len > 0 {
                pieces.push(std::mem::take(&mut current));
                current_len = 0;
                continue;
            }
            // A line longer than a whole message: cut it.
            let tail = rest.split_off(room.min(rest.len()));
            pieces.push(rest.iter().collect());
            rest = tail;
        }
    }
    if current_len > 0 || pieces.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Newlines and tabs in a title become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A code block ends at the next three backticks: break every run of them with a zero-width space.
fn fence_safe(text: &str) -> String {
    text.replace("```", "`\u{200b}`\u{200b}`")
}

/// CommonMark: a backslash before any ASCII punctuation makes it literal.
fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tiny;

    impl Platform for Tiny {
        const KIND: &'static str = "tiny";
        const LIMIT: usize = 120;
        fn heading(title: &str) -> Option<String> {
            Some(format!("**{}**", escape_markdown(title)))
        }
        fn payload(&self, text: String) -> Value {
            Value::String(text)
        }
    }

    #[test]
    fn long_bodies_split_at_lines_within_the_limit_and_keep_everything() {
        let body: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let texts = texts::<Tiny>("T", &body);
        assert!(texts.len() > 1);
        let mut seen = String::new();
        for (i, text) in texts.iter().enumerate() {
            assert!(text.chars().count() <= Tiny::LIMIT, "{text}");
            assert!(
                text.starts_with(&format!("**T \\(part {} of {}\\)**", i + 1, texts.len())),
                "{text}"
            );
            let inner = text
                .split_once("```\n")
                .unwrap()
                .1
                .strip_suffix("\n```")
                .unwrap();
            seen.push_str(inner);
            seen.push('\n');
        }
        assert_eq!(seen, body);
    }

    #[test]
    fn markup_in_titles_and_bodies_stays_literal() {
        let texts = texts::<Tiny>("*x* <@everyone> [a](b)\nnext", "```\n@here <b>");
        assert_eq!(
            texts,
            [
                "**\\*x\\* \\<\\@everyone\\> \\[a\\]\\(b\\) next**\n```\n`\u{200b}`\u{200b}`\n@here <b>\n```"
            ]
        );
    }

    #[test]
    fn a_line_longer_than_a_message_is_cut_not_lost() {
        let body = "x".repeat(500);
        let texts = texts::<Tiny>("T", &body);
        let total: usize = texts
            .iter()
            .map(|t| t.split_once("```\n").unwrap().1.matches('x').count())
            .sum();
        assert_eq!(total, 500);
        assert!(texts.iter().all(|t| t.chars().count() <= Tiny::LIMIT));
    }
}
