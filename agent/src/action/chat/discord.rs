//! `type: discord`: posts to a Discord webhook (`POST /api/webhooks/<id>/<token>?wait=true`, JSON
//! `{"content", "username", "avatar_url", "allowed_mentions": {"parse": []}}`). `wait=true` makes
//! Discord answer only once the message exists; no mention in an event can ping anyone.

use serde_json::{Value, json};

use super::{Identity, Platform, escape_markdown};
use crate::action::{BuildContext, Built};
use crate::config::{ActionConfig, Diagnostic};
use crate::message::Message;

struct Discord(Identity);

impl Platform for Discord {
    const KIND: &'static str = "discord";
    /// Discord's longest message content.
    const LIMIT: usize = 2_000;

    fn heading(title: &str) -> Option<String> {
        Some(format!("**{}**", escape_markdown(title)))
    }

    fn payload(&self, text: String) -> Value {
        let mut payload = json!({ "content": text, "allowed_mentions": { "parse": [] } });
        if let Value::Object(map) = &mut payload {
            self.0.insert(map, ["username", "avatar_url", ""]);
        }
        payload
    }

    fn url(&self, base: &reqwest::Url, _message: &Message) -> reqwest::Url {
        let mut url = base.clone();
        if !url.query_pairs().any(|(k, _)| k == "wait") {
            url.query_pairs_mut().append_pair("wait", "true");
        }
        url
    }
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    super::build(config, Discord)
}
