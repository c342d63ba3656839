//! `unique-message-props` / `unique-message-timeout`: drop a route's message when an event with
//! the same property values was seen within the timeout. Keys are per route (Postee's were global,
//! so a second route or action silently lost the message).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where dedup keys live. In memory here; a durable store can implement the same trait.
pub trait DedupStore: Send + Sync {
    /// Records `key` for `ttl` (forever when `None`); true when it was already there, unexpired.
    fn seen(&self, key: &str, ttl: Option<Duration>) -> bool;
    /// Drops expired keys; returns how many went.
    fn purge_expired(&self) -> usize;
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
    expires: Option<Instant>,
}

impl MemoryDedup {
    pub fn new(max_bytes: Option<u64>) -> MemoryDedup {
        MemoryDedup {
            state: Mutex::new(State::default()),
            max_bytes,
        }
    }
}

impl State {
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
    fn seen(&self, key: &str, ttl: Option<Duration>) -> bool {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if let Some(entry) = state.entries.get(key) {
            if entry.expires.is_none_or(|at| at > now) {
                return true;
            }
            state.remove(key);
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.entries.insert(
            key.to_string(),
            Entry {
                seq,
                expires: ttl.map(|t| now + t),
            },
        );
        state.order.insert(seq, key.to_string());
        state.bytes += entry_cost(key);
        if let Some(max) = self.max_bytes {
            while state.bytes > max {
                let Some((_, oldest)) = state.order.pop_first() else {
                    break;
                };
                if let Some(entry) = state.entries.remove(&oldest) {
                    let _ = entry;
                    state.bytes = state.bytes.saturating_sub(entry_cost(&oldest));
                }
            }
        }
        false
    }

    fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        let expired: Vec<String> = state
            .entries
            .iter()
            .filter(|(_, e)| e.expires.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            state.remove(key);
        }
        expired.len()
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
        assert!(!store.seen("k", Some(Duration::from_millis(0))));
        assert!(
            !store.seen("k", Some(Duration::from_millis(0))),
            "an expired key is new again"
        );
        assert!(!store.seen("forever", None));
        assert!(store.seen("forever", None));
    }

    #[test]
    fn size_cap_evicts_oldest_first() {
        let store = MemoryDedup::new(Some(3 * entry_cost("k1")));
        for key in ["k1", "k2", "k3", "k4"] {
            assert!(!store.seen(key, None));
        }
        assert_eq!(store.len(), 3);
        assert!(!store.seen("k1", None), "k1 was evicted");
        assert!(store.seen("k4", None));
    }
}
