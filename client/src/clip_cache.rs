//! A process-wide cache of encoded clips: each clip is encoded once, even when many
//! participants ask for it at the same moment (a load run's ramp): the first encodes it and the
//! others wait for that encoding instead of encoding it again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use anyhow::Result;

/// One key's clip: empty until its first encoding succeeds; locked while encoding.
type Slot<V> = Arc<Mutex<Option<Arc<V>>>>;

/// Clips `V` by key `K`, each encoded on first use.
pub(crate) struct ClipCache<K, V> {
    entries: Mutex<HashMap<K, Slot<V>>>,
}

impl<K: Eq + Hash, V> Default for ClipCache<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash, V> ClipCache<K, V> {
    /// The clip for `key`, encoded by `encode` if nobody has yet; a failed encoding is not
    /// cached (the next caller tries again).
    pub fn get_or_encode(&self, key: K, encode: impl FnOnce() -> Result<V>) -> Result<Arc<V>> {
        let slot = Arc::clone(
            self.entries
                .lock()
                .expect("clip cache")
                .entry(key)
                .or_default(),
        );
        let mut clip = slot.lock().expect("clip slot");
        if let Some(clip) = &*clip {
            return Ok(Arc::clone(clip));
        }
        let encoded = Arc::new(encode()?);
        *clip = Some(Arc::clone(&encoded));
        Ok(encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn concurrent_callers_encode_once() {
        let cache = Arc::new(ClipCache::<u32, u32>::default());
        let encodings = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, encodings) = (Arc::clone(&cache), Arc::clone(&encodings));
                std::thread::spawn(move || {
                    cache
                        .get_or_encode(7, || {
                            encodings.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(49)
                        })
                        .unwrap()
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(*thread.join().unwrap(), 49);
        }
        assert_eq!(encodings.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_encoding_is_tried_again() {
        let cache = ClipCache::<u32, u32>::default();
        assert!(
            cache
                .get_or_encode(1, || Err(anyhow::anyhow!("no encoder")))
                .is_err()
        );
        assert_eq!(*cache.get_or_encode(1, || Ok(2)).unwrap(), 2);
        assert_eq!(*cache.get_or_encode(1, || Ok(3)).unwrap(), 2);
    }
}
