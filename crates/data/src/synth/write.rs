//! What every task shares: splits, the per-item random streams, the parallel item loop with
//! its progress bar, writing images + masks + scene files, balanced label plans and the
//! text-only priors.

use std::collections::BTreeMap;
use std::path::Path;

use image::ExtendedColorType;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::SynthConfig;
use super::render::{png, render};
use super::scene::{Knobs, Layout, Scene};
use crate::error::{DataError, Result, io};
use crate::layout::{in_task, scene_mask, scene_masks, scenes_file, split_images};
use crate::out::SuiteDir;
use crate::score::PriorEntry;
use mmerge_core::hash::fnv1a;

pub use crate::suite::Split;

/// The scene of every image of a task split: `<task>/scenes/<split>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenesFile {
    pub layout: Layout,
    pub scenes: Vec<SceneRecord>,
}

/// One image: its path and its mask's path (relative to the task folder) and its objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneRecord {
    pub image: String,
    pub mask: String,
    pub objects: Vec<super::scene::Object>,
}

/// The state one generation shares between tasks.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub cfg: &'a SynthConfig,
    pub layout: Layout,
    pub knobs: Knobs,
    pub suite: &'a SuiteDir,
    pub pb: ProgressBar,
}

impl<'a> Ctx<'a> {
    pub fn new(cfg: &'a SynthConfig, suite: &'a SuiteDir, pb: ProgressBar) -> Self {
        Self {
            cfg,
            layout: Layout::new(cfg.image_size),
            knobs: Knobs {
                min: cfg.min_objects as usize,
                max: cfg.max_objects as usize,
                distractors: cfg.distractors,
            },
            suite,
            pb,
        }
    }

    /// The random stream of one item: key (seed, task, split), stream `index`. It depends on
    /// nothing else, so items can be made in any order on any thread.
    pub fn rng(&self, task: &str, split: Split, index: usize) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.cfg.seed.to_le_bytes());
        key[8..16].copy_from_slice(&fnv1a(task.as_bytes()).to_le_bytes());
        key[16..24].copy_from_slice(&(split.index() as u64 + 1).to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(index as u64);
        rng
    }

    /// The random stream of a whole split (plans and shuffles), apart from every item's.
    pub fn split_rng(&self, task: &str, split: Split) -> ChaCha8Rng {
        self.rng(task, split, usize::MAX)
    }

    /// Creates folders (relative to the suite root) before a parallel loop writes into them.
    pub fn mkdirs(&self, rels: &[String]) -> Result<()> {
        for rel in rels {
            let p = self.suite.root().join(rel);
            io(&p, std::fs::create_dir_all(&p))?;
        }
        Ok(())
    }

    /// `f(0..n)` on the rayon pool, in index order; ticks the progress bar once per item.
    pub fn par<T: Send>(
        &self,
        n: usize,
        f: impl Fn(usize) -> Result<T> + Sync + Send,
    ) -> Result<Vec<T>> {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let r = f(i);
                self.pb.inc(1);
                r
            })
            .collect()
    }

    fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let p = self.suite.root().join(rel);
        io(&p, std::fs::write(&p, bytes))
    }

    /// Renders `scene` and writes its image and mask (paths relative to the suite root, folders
    /// made already). Returns the number of background pixels.
    pub fn draw(
        &self,
        scene: &Scene,
        image: &str,
        mask: &str,
        rng: &mut ChaCha8Rng,
    ) -> Result<usize> {
        let (rgb, m) = render(&self.layout, scene, self.cfg.noise, rng);
        let side = self.layout.image_size;
        self.write_file(
            image,
            &png(Path::new(image), side, &rgb, ExtendedColorType::Rgb8)?,
        )?;
        self.write_file(
            mask,
            &png(Path::new(mask), side, &m, ExtendedColorType::L8)?,
        )?;
        Ok(m.iter().filter(|&&v| v == 0).count())
    }

    /// Creates the two folders [`Ctx::draw_in`] writes a split's images and masks into.
    pub fn image_dirs(&self, task: &str, split: &str) -> Result<()> {
        self.mkdirs(&[
            in_task(task, &split_images(split)),
            in_task(task, &scene_masks(split)),
        ])
    }

    /// Draws `scene` as `<task>/<image>` (`image` one of the split's images,
    /// [`crate::layout::split_images`]) with its mask of the same file name in
    /// [`crate::layout::scene_masks`], and returns those two paths relative to the task.
    pub fn draw_in(
        &self,
        task: &str,
        split: &str,
        image: String,
        scene: &Scene,
        rng: &mut ChaCha8Rng,
    ) -> Result<(String, String)> {
        let file = image.rsplit('/').next().unwrap_or(&image);
        let mask = scene_mask(split, file);
        self.draw(scene, &in_task(task, &image), &in_task(task, &mask), rng)?;
        Ok((image, mask))
    }

    /// Writes `<root>/scenes/<split>.json`.
    pub fn write_scenes(&self, root: &str, split: Split, scenes: Vec<SceneRecord>) -> Result<()> {
        let file = ScenesFile {
            layout: self.layout,
            scenes,
        };
        self.suite
            .write_compact(&in_task(root, &scenes_file(split.name())), &file)
    }
}

/// Borrows owned `(key, label)` pairs for `Prior`.
pub(crate) fn str_pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// `n` labels from `0..k`, as equal in number as `n` allows, in a seeded random order.
pub(crate) fn balanced(n: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).map(|i| i % k.max(1)).collect();
    v.shuffle(rng);
    v
}

/// Tries `f` until it returns a value; the generator's constructions succeed within a few
/// tries, so running out means a bug or knobs that cannot be satisfied.
pub(crate) fn attempt<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    const TRIES: usize = 2000;
    for _ in 0..TRIES {
        if let Some(t) = f() {
            return Ok(t);
        }
    }
    Err(DataError::Unsatisfiable {
        what: what.to_string(),
        tries: TRIES,
    })
}

/// `vqa/question_prior.json`: the per-question-string prior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuestionPriorFile {
    /// The majority answer of the training split (used for questions not seen in training).
    pub fallback: PriorEntry,
    /// Accuracy on the test split of the per-question prior and of the majority answer.
    pub test_accuracy: f64,
    pub majority_test_accuracy: f64,
    /// Per exact question text.
    pub questions: BTreeMap<String, PriorEntry>,
}
