//! `type: rocketchat`: posts to a Rocket.Chat incoming webhook (`POST /hooks/<id>/<token>`, JSON
//! `{"text", "alias", "avatar", "channel"}`). Rocket.Chat's Markdown has no escapes, so the title
//! goes inside the code block with the body.

use serde_json::{Value, json};

use super::{Identity, Platform};
use crate::action::{BuildContext, Built};
use crate::config::{ActionConfig, Diagnostic};

struct RocketChat(Identity);

impl Platform for RocketChat {
    const KIND: &'static str = "rocketchat";
    /// Rocket.Chat's default Message_MaxAllowedSize.
    const LIMIT: usize = 5_000;

    fn heading(_title: &str) -> Option<String> {
        None
    }

    fn payload(&self, text: String) -> Value {
        let mut payload = json!({ "text": text });
        if let Value::Object(map) = &mut payload {
            self.0.insert(map, ["alias", "avatar", "channel"]);
        }
        payload
    }
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    super::build(config, RocketChat)
}
