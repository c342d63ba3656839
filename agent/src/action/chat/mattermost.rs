//! `type: mattermost`: posts to a Mattermost incoming webhook (`POST /hooks/<key>`, JSON
//! `{"text", "username", "icon_url", "channel"}`); Markdown, the title in bold.

use serde_json::{Value, json};

use super::{Identity, Platform, escape_markdown};
use crate::action::{BuildContext, Built};
use crate::config::{ActionConfig, Diagnostic};

struct Mattermost(Identity);

impl Platform for Mattermost {
    const KIND: &'static str = "mattermost";
    /// Mattermost's longest post (MaxPostSize, 16,383 characters by default).
    const LIMIT: usize = 16_383;

    fn heading(title: &str) -> Option<String> {
        Some(format!("**{}**", escape_markdown(title)))
    }

    fn payload(&self, text: String) -> Value {
        let mut payload = json!({ "text": text });
        if let Value::Object(map) = &mut payload {
            self.0.insert(map, ["username", "icon_url", "channel"]);
        }
        payload
    }
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    super::build(config, Mattermost)
}
