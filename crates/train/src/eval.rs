//! Running a split through a network for evaluation: items in order, no augmentation, no
//! gradients, batches decoded in the background.

use mmerge_data::batch::{Loader, LoaderConfig};
use mmerge_data::transform::ImageTransform;

use crate::error::Result;
use crate::input::{Collator, Item, ModelBatch, decoder};

/// What evaluation batches are made with.
#[derive(Debug, Clone)]
pub struct EvalData {
    pub collator: Collator,
    /// The image transform without augmentation.
    pub transform: ImageTransform,
    pub batch_size: usize,
    /// Decoding threads (`None`: rayon's global pool).
    pub threads: Option<usize>,
}

impl EvalData {
    /// Calls `f` on every batch of `items`, in item order, under `no_grad`.
    pub fn for_each(
        &self,
        items: Vec<Item>,
        soft_classes: usize,
        mut f: impl FnMut(ModelBatch) -> Result<()>,
    ) -> Result<()> {
        let loader = Loader::new(
            items,
            decoder(ImageTransform {
                augment: None,
                ..self.transform
            }),
            LoaderConfig {
                batch_size: self.batch_size,
                seed: 0,
                shuffle: false,
                drop_last: false,
                prefetch: 2,
            },
            self.threads,
        )?;
        let collator = Collator {
            soft_classes,
            ..self.collator.clone()
        };
        let _guard = tch::no_grad_guard();
        for batch in loader.epoch(0) {
            f(collator.collate(batch?)?)?;
        }
        Ok(())
    }
}
