//! Receiving in batches, for the state store's writer thread: block for
//! one item, then take whatever else has queued meanwhile, so one commit or one write serves all.

use std::sync::mpsc::Receiver;

/// Blocks for the next item, then takes up to `max - 1` more that are already queued; `None`
/// once every sender is gone.
pub fn recv_batch<T>(rx: &Receiver<T>, max: usize) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let mut batch = vec![first];
    batch.extend(rx.try_iter().take(max.saturating_sub(1)));
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_is_queued_up_to_max() {
        let (tx, rx) = std::sync::mpsc::channel();
        for n in 0..5 {
            tx.send(n).unwrap();
        }
        assert_eq!(recv_batch(&rx, 3), Some(vec![0, 1, 2]));
        assert_eq!(recv_batch(&rx, 3), Some(vec![3, 4]));
        drop(tx);
        assert_eq!(recv_batch(&rx, 3), None);
    }
}
