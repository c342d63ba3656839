//! `unique-message-props` / `unique-message-timeout`: drop a route's message when an event with
//! the same property values was seen within the timeout. Keys are per route (Postee's were global,
//! so a second route or action silently lost the message).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use crate::outbox::now_ms;

/// What [`DedupStore::seen`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Recorded and unexpired: drop the message.
    Duplicate,
    /// New: recorded until `expires_ms` (unix ms; 0 = forever); `evicted` made room for it.
    New {
        expires_ms: u64,
        evicted: Vec<String>,
    },
}

/// Where dedup keys live: in memory for speed; the router persists what `seen` reports (new
/// keys, evictions) in the same commit as the event's deliveries, and restores it at start.
pub trait DedupStore: Send + Sync {
    fn seen(&self, key: &str, ttl: Option<Duration>) -> Seen;
    /// Drops expired keys; returns them.
    fn purge_expired(&self) -> Vec<String>;
    /// Forgets a key recorded for an event that could not be stored (so its retry is not a duplicate).
    fn forget(&self, key: &str);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key for `event` on `route`, or `None` when none of the properties has a value.
pub fn dedup_key(route: &str, props: &[String], event: &serde_json::Value) -> Option<String> {
    let values: Vec<String> = props
        .iter()
        .filter_map(|path| prop_value(event, path))
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(format!("{route}\u{1f}{}", values.join("-")))
}

/// Follows a dot path; at an array, Postee's rule takes the first element.
fn prop_value(event: &serde_json::Value, path: &str) -> Option<String> {
    let mut current = event;
    for segment in path.split('.') {
        while let serde_json::Value::Array(items) = current {
            current = items.first()?;
        }
        current = current.get(segment)?;
    }
    while let serde_json::Value::Array(items) = current {
        current = items.first()?;
    }
    match current {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Dedup keys in memory, capped in bytes (`max-db-size`): the oldest keys are evicted first.
pub struct MemoryDedup {
    state: Mutex<State>,
    max_bytes: Option<u64>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Insertion order, for oldest-first eviction.
    order: BTreeMap<u64, String>,
    next_seq: u64,
    bytes: u64,
}

struct Entry {
    seq: u64,
    /// Unix ms; 0 = forever.
    expires_ms: u64,
}

impl MemoryDedup {
    pub fn new(max_bytes: Option<u64>) -> MemoryDedup {
        MemoryDedup {
            state: Mutex::new(State::default()),
            max_bytes,
        }
    }

    /// Loads keys recovered from the state store, skipping expired ones.
    pub fn restore(&self, entries: Vec<(String, u64)>) {
        let now = now_ms();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for (key, expires_ms) in entries {
            if expires_ms != 0 && expires_ms <= now {
                continue;
            }
            state.insert(key, expires_ms);
        }
    }
}

impl State {
    fn insert(&mut self, key: String, expires_ms: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += entry_cost(&key);
        self.order.insert(seq, key.clone());
        self.entries.insert(key, Entry { seq, expires_ms });
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.order.remove(&entry.seq);
            self.bytes = self.bytes.saturating_sub(entry_cost(key));
        }
    }
}

fn entry_cost(key: &str) -> u64 {
    key.len() as u64 + 48
}

impl DedupStore for MemoryDedup {
    fn seen(&self, key: &str, ttl: Option<Duration>) -> Seen {
        let now = now_ms();
        let Ok(mut state) = self.state.lock() else {
            return Seen::New {
                expires_ms: 0,
                evicted: Vec::new(),
            };
        };
        if let Some(entry) = state.entries.get(key) {
            if entry.expires_ms == 0 || entry.expires_ms > now {
                return Seen::Duplicate;
            }
            state.remove(key);
        }
        let expires_ms = ttl.map_or(0, |t| now + t.as_millis() as u64);
        state.insert(key.to_string(), expires_ms);
        let mut evicted = Vec::new();
        if let Some(max) = self.max_bytes {
            while state.bytes > max {
                let Some((_, oldest)) = state.order.pop_first() else {
                    break;
                };
                if state.entries.remove(&oldest).is_some() {
                    state.bytes = state.bytes.saturating_sub(entry_cost(&oldest));
                }
                evicted.push(oldest);
            }
        }
        Seen::New {
            expires_ms,
            evicted,
        }
    }

    fn purge_expired(&self) -> Vec<String> {
        let now = now_ms();
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let expired: Vec<String> = state
            .entries
            .iter()
            .filter(|(_, e)| e.expires_ms != 0 && e.expires_ms <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            state.remove(key);
        }
        expired
    }

    fn forget(&self, key: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.remove(key);
        }
    }

    fn len(&self) -> usize {
        self.state.lock().map(|s| s.entries.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_per_route_and_take_first_array_element() {
        let event =
            json!({"image": "alpine", "resources": [{"name": "openssl"}, {"name": "zlib"}]});
        let props = vec![
            "image".to_string(),
            "resources.name".to_string(),
            "missing".to_string(),
        ];
        assert_eq!(
            dedup_key("r1", &props, &event).as_deref(),
            Some("r1\u{1f}alpine-openssl")
        );
        assert_ne!(
            dedup_key("r1", &props, &event),
            dedup_key("r2", &props, &event)
        );
        assert_eq!(dedup_key("r1", &["nope".to_string()], &event), None);
    }

    #[test]
    fn repeated_key_is_a_duplicate_until_it_expires() {
        let store = MemoryDedup::new(None);
        assert!(matches!(
            store.seen("k", Some(Duration::from_millis(0))),
            Seen::New { .. }
        ));
        assert!(
            matches!(
                store.seen("k", Some(Duration::from_millis(0))),
                Seen::New { .. }
            ),
            "an expired key is new again"
        );
        assert_eq!(
            store.seen("forever", None),
            Seen::New {
                expires_ms: 0,
                evicted: vec![]
            }
        );
        assert_eq!(store.seen("forever", None), Seen::Duplicate);
    }

    #[test]
    fn size_cap_evicts_oldest_first() {
        let store = MemoryDedup::new(Some(3 * entry_cost("k1")));
        for key in ["k1", "k2", "k3"] {
            assert!(matches!(store.seen(key, None), Seen::New { .. }));
        }
        assert_eq!(
            store.seen("k4", None),
            Seen::New {
                expires_ms: 0,
                evicted: vec!["k1".to_string()]
            }
        );
        assert_eq!(store.len(), 3);
        assert!(
            matches!(store.seen("k1", None), Seen::New { .. }),
            "k1 was evicted"
        );
        assert_eq!(store.seen("k4", None), Seen::Duplicate);
    }

    #[test]
    fn restored_keys_are_duplicates_and_expired_ones_are_skipped() {
        let store = MemoryDedup::new(None);
        store.restore(vec![("old".into(), 1), ("kept".into(), 0)]);
        assert_eq!(store.seen("kept", None), Seen::Duplicate);
        assert!(matches!(store.seen("old", None), Seen::New { .. }));
    }
}
