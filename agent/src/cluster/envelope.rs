//! A relayed delivery on the wire: what a responder needs to run the action itself. Versioned
//! JSON (`"v": 1`); a responder refuses (terminates) a version it does not know, and a new
//! field is added with a default, never renamed.

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// The encoding version this build writes.
pub const VERSION: u32 = 1;

/// Cluster-wide dedup of a relayed delivery (the route's `unique-message-props`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dedup {
    /// The route's dedup key (route and property values), as the node's router computed it.
    pub key: String,
    /// `unique-message-timeout` in milliseconds; `None`: the key never expires.
    pub ttl_ms: Option<u64>,
}

/// One relayed delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    pub v: u32,
    /// Stable id of the delivery (also its `Nats-Msg-Id`).
    pub id: String,
    /// The node agent that relayed it.
    pub node: String,
    pub route: String,
    /// The action to run, by name, in the responder's config.
    pub action: String,
    /// Relay attempts the node made before this one succeeded (1 = first try).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,
    /// One message of an aggregating route: the responder that aggregates for the cluster
    /// gathers it (it came on the aggregate stream).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aggregate: bool,
    /// The rendered message (title, body, url, fields) and the event it came from.
    pub message: Message,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a relayed delivery: {0}")]
    Malformed(String),
    #[error("relayed delivery version {0} is newer than this Hooker understands ({VERSION})")]
    Version(u32),
}

impl Envelope {
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        #[derive(Deserialize)]
        struct Head {
            v: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if head.v != VERSION {
            return Err(EnvelopeError::Version(head.v));
        }
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_envelope_round_trips_and_unknown_versions_are_refused() {
        let envelope = Envelope {
            v: VERSION,
            id: "abc".into(),
            node: "n1".into(),
            route: "r".into(),
            action: "hook".into(),
            attempt: 2,
            dedup: Some(Dedup {
                key: "r\u{1f}x".into(),
                ttl_ms: Some(1000),
            }),
            aggregate: true,
            message: Message {
                route: "r".into(),
                event_id: "e1".into(),
                title: "t".into(),
                body: "b".into(),
                event: Arc::new(serde_json::json!({"a": 1}).into()),
                ..Message::default()
            },
        };
        let bytes = envelope.encode().unwrap();
        assert_eq!(Envelope::decode(&bytes).unwrap(), envelope);
        let newer = String::from_utf8(bytes)
            .unwrap()
            .replace("\"v\":1", "\"v\":2");
        assert!(matches!(
            Envelope::decode(newer.as_bytes()),
            Err(EnvelopeError::Version(2))
        ));
        assert!(Envelope::decode(b"{}").is_err());
    }
}
