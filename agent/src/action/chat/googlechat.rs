//! `type: googlechat`: posts to a Google Chat space's incoming webhook
//! (`POST https://chat.googleapis.com/v1/spaces/<space>/messages?key=…&token=…`, JSON `{"text"}`).
//! Messages of one finding (the template's `result_finding`) go to one thread: `threadKey` is the
//! finding, `messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`. Google Chat's formatting
//! has no escapes, so the title goes inside the code block with the body.

use serde_json::{Value, json};

use super::{Identity, Platform};
use crate::action::{BuildContext, Built};
use crate::config::{ActionConfig, Diagnostic};
use crate::message::Message;

struct GoogleChat;

impl Platform for GoogleChat {
    const KIND: &'static str = "googlechat";
    /// Google Chat's longest message text.
    const LIMIT: usize = 4_096;

    fn heading(_title: &str) -> Option<String> {
        None
    }

    fn payload(&self, text: String) -> Value {
        json!({ "text": text })
    }

    fn url(&self, base: &reqwest::Url, message: &Message) -> reqwest::Url {
        let mut url = base.clone();
        if let Some(finding) = message.field_str("finding").filter(|f| !f.is_empty()) {
            url.query_pairs_mut()
                .append_pair("threadKey", &finding)
                .append_pair("messageReplyOption", "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD");
        }
        url
    }
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    super::build(config, |_: Identity| GoogleChat)
}
