//! Batching: seeded shuffling, parallel decoding on rayon, and prefetching on a background
//! thread, so the next batch is ready while the model trains on this one.
//!
//! Determinism: the order of an epoch depends only on (seed, epoch), and every example's
//! augmentation draws from its own generator seeded by (seed, epoch, example index), so the
//! batches are identical whatever the thread count or timing.

use mmerge_core::hash::{GOLDEN_GAMMA, splitmix64};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{DataError, Result};

/// Turns one item into one example; gets the example's own seeded generator.
pub type LoadFn<T, E> = dyn Fn(&T, &mut ChaCha8Rng) -> Result<E> + Send + Sync;

/// A batch: the examples and the indices (into the item list) they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<E> {
    pub indices: Vec<usize>,
    pub examples: Vec<E>,
}

/// How batches are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Finished batches that may wait for the consumer; the producer works on one more
    /// meanwhile (0: it hands each batch over as soon as the consumer asks).
    pub prefetch: usize,
}

/// Serves batches of examples made from `items` by a load function.
pub struct Loader<T, E> {
    items: Arc<Vec<T>>,
    load: Arc<LoadFn<T, E>>,
    config: LoaderConfig,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl<T, E> std::fmt::Debug for Loader<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("items", &self.items.len())
            .field("config", &self.config)
            .finish()
    }
}

impl<T: Send + Sync + 'static, E: Send + 'static> Loader<T, E> {
    /// A loader over `items`. `threads` decode in parallel (`None`: rayon's global pool).
    pub fn new(
        items: Vec<T>,
        load: Arc<LoadFn<T, E>>,
        config: LoaderConfig,
        threads: Option<usize>,
    ) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::OutOfRange {
                what: "batch_size 0".into(),
                allowed: "must be at least 1".into(),
            });
        }
        let pool = match threads {
            None => None,
            Some(n) => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("mmerge-data-{i}"))
                    .build()
                    .map_err(|e| DataError::Threads {
                        what: "loader pool",
                        reason: e.to_string(),
                    })?,
            )),
        };
        Ok(Self {
            items: Arc::new(items),
            load,
            config,
            pool,
        })
    }

    /// Items served per epoch, before batching.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.items.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The item order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
                self.config.seed,
                epoch,
                u64::MAX,
            )));
        }
        order
    }

    /// The batches of `epoch`, made in the background. The first error ends the epoch.
    pub fn epoch(&self, epoch: u64) -> Batches<E> {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on (a resumed run): the same batches, with
    /// the same augmentation, as [`Loader::epoch`] gives from that point.
    pub fn epoch_from(&self, epoch: u64, first: usize) -> Batches<E> {
        let mut order = self.order(epoch);
        order.drain(..(first * self.config.batch_size).min(order.len()));
        let (tx, rx) = sync_channel(self.config.prefetch);
        let worker = Worker {
            items: Arc::clone(&self.items),
            load: Arc::clone(&self.load),
            config: self.config,
            pool: self.pool.clone(),
            epoch,
        };
        let handle = std::thread::Builder::new()
            .name("mmerge-prefetch".into())
            .spawn(move || worker.run(order, tx));
        match handle {
            Ok(h) => Batches {
                rx: Some(rx),
                handle: Some(h),
                spawn_error: None,
            },
            Err(e) => Batches {
                rx: None,
                handle: None,
                spawn_error: Some(DataError::Threads {
                    what: "prefetch thread",
                    reason: e.to_string(),
                }),
            },
        }
    }
}

struct Worker<T, E> {
    items: Arc<Vec<T>>,
    load: Arc<LoadFn<T, E>>,
    config: LoaderConfig,
    pool: Option<Arc<rayon::ThreadPool>>,
    epoch: u64,
}

impl<T: Send + Sync, E: Send> Worker<T, E> {
    fn run(self, order: Vec<usize>, tx: SyncSender<Result<Batch<E>>>) {
        let b = self.config.batch_size;
        for chunk in order.chunks(b) {
            if self.config.drop_last && chunk.len() < b {
                break;
            }
            let make = || -> Result<Vec<E>> {
                chunk
                    .par_iter()
                    .map(|&i| {
                        let mut rng =
                            ChaCha8Rng::seed_from_u64(mix(self.config.seed, self.epoch, i as u64));
                        (self.load)(&self.items[i], &mut rng)
                    })
                    .collect()
            };
            let made = match &self.pool {
                Some(p) => p.install(make),
                None => make(),
            };
            let failed = made.is_err();
            let batch = made.map(|examples| Batch {
                indices: chunk.to_vec(),
                examples,
            });
            // A send fails only when the consumer is gone: stop quietly.
            if tx.send(batch).is_err() || failed {
                return;
            }
        }
    }
}

/// The batches of one epoch, in order.
pub struct Batches<E> {
    rx: Option<Receiver<Result<Batch<E>>>>,
    handle: Option<JoinHandle<()>>,
    spawn_error: Option<DataError>,
}

impl<E> std::fmt::Debug for Batches<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches").finish_non_exhaustive()
    }
}

impl<E> Iterator for Batches<E> {
    type Item = Result<Batch<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.spawn_error.take() {
            return Some(Err(e));
        }
        match self.rx.as_ref()?.recv() {
            Ok(batch) => Some(batch),
            // The producer is gone: it finished, or it panicked (then say so, once).
            Err(_) => {
                self.rx = None;
                match self.handle.take()?.join() {
                    Ok(()) => None,
                    Err(panic) => Some(Err(DataError::LoaderPanicked {
                        message: panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default(),
                    })),
                }
            }
        }
    }
}

impl<E> Drop for Batches<E> {
    fn drop(&mut self) {
        // Close the channel first so a producer blocked on a full queue wakes and stops.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// SplitMix64 of the three values: an independent seed per (seed, epoch, index).
fn mix(seed: u64, epoch: u64, index: u64) -> u64 {
    splitmix64(seed ^ epoch.wrapping_mul(GOLDEN_GAMMA) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03))
}
