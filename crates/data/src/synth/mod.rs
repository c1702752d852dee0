//! The synthetic multimodal suite (`mmerge data synth`): small images of coloured shapes with
//! captions, VQA questions, NLVR2-style statements, segmentation masks, image classes and
//! text-only labels, written in the standard formats (`crate::layout` gives the layout) so the
//! same readers serve it and real data.
//!
//! # Scenes
//! A scene is 1–5 objects (`min_objects..=max_objects`, at most 9) on a 3×3 grid, one per
//! cell, never touching (`scene`). An object has a shape (square, circle, triangle, cross), a
//! colour (red, green, blue, yellow, purple, orange) and a size (small, large). Images are
//! flat colours on a grey background with seeded noise and no anti-aliasing (`render`), so
//! every object is one connected blob of one exact colour. Every image has a class-index mask
//! (0 background, 1 square, 2 circle, 3 triangle, 4 cross) and its scene is written to
//! `<task>/scenes/<split>.json` (`ScenesFile`: objects with shape, colour, size, bbox, and the
//! image's and mask's paths; masks of non-segmentation tasks go to
//! `<task>/scenes/masks/<split>/`).
//!
//! # Grammar (`grammar`)
//! Noun phrases: `a [small|large] [colour] (shape|"shape")`, "an" before a vowel.
//! - Captions (`retrieval`, 5 distinct per image): "a small red circle", "there is a red
//!   shape", "a red circle and a blue square" (and three-object lists), "a red circle (to the)
//!   left of / (to the) right of / above / below a blue square", "there are three shapes",
//!   "there are two red shapes", "there is one circle". Descriptions are existential, counts
//!   exact, "and" needs distinct objects.
//! - Questions (`vqa`): "what colour is the [size] circle?", "what shape is the [size] red
//!   object?", "how many shapes are there?", "how many red shapes / circles are there?",
//!   "is there a [size] red circle?", "is the red circle left of / right of / above / below
//!   the blue square?". "The X" presupposes exactly one X.
//! - Statements (`nlvr2`): "both images contain a X", "the left/right image contains a X",
//!   "the left/right image has N shapes", "the left image has more shapes than the right
//!   image", "both images have the same number of shapes", "exactly one image contains a X",
//!   "there are N circles in total".
//! - Relations: A is left of B when A's centre is more than half a cell left of B's, which
//!   holds exactly when A sits in a grid column further left (above: a row further up).
//!
//! # Truth and balance
//! Every text is made from a meaning (`grammar::{Claim, Question, Statement}`) and the scene
//! is sampled, then the meaning is evaluated on the placed scene and the draw is repeated
//! until it has the intended value; nothing is written that was not checked. The order is
//! always text first, then label, then scene:
//! - VQA: a question type is drawn from a balanced plan (colour, shape, count, existence,
//!   spatial), then the answer uniformly from that form's answer set (colours, shapes, counts
//!   in range, yes/no), then the question's other words independently of the answer, then a
//!   scene that makes the answer true (a "no" spatial answer puts the objects the other way
//!   round, never side by side). The per-question-string prior and the majority answer are
//!   measured (train → test) and written to `suite.json` and `vqa/question_prior.json`.
//! - NLVR2: statements come in pairs: a template from a balanced plan and its words, then
//!   two examples with that exact sentence, one True and one False, each with its own image
//!   pair. Any predictor that sees only the sentence is therefore right on exactly half of
//!   every split; the template prior and the exact-sentence prior are measured and written.
//! - Classification labels (shape, object count, caption colour, caption length) come from a
//!   balanced plan per split.
//!
//! # Knobs (`SynthConfig`)
//! `image_size` (24..=512 pixels), `min_objects..=max_objects` (1..=9), `distractors` (the
//! probability that a filler object is a near miss of the object a text is about — same
//! shape and another colour, and so on — or, in scenes without a text, shares an attribute
//! with another object), `noise` (background noise amplitude, ≤ 30), and `scale`.
//!
//! # Determinism
//! Every item draws from its own ChaCha8 stream keyed by (seed, task, split) with the item's
//! index as stream number, and results are gathered in index order, so the same seed gives
//! the same bytes whatever the number of rayon threads. PNGs use fixed encoder settings.

mod grammar;
mod nlvr2;
mod render;
mod retrieval;
mod scene;
mod text;
mod vision;
mod vqa;
mod write;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use render::{BACKGROUND, MAX_NOISE, covers};
pub use scene::{Colour, GRID, Layout, Object, Shape, Size};
pub use write::{QuestionPriorFile, SceneRecord, ScenesFile};

use crate::error::{DataError, Result};
use crate::out::SuiteDir;
use crate::suite::{Manifest, SCHEMA};
use write::Ctx;

/// How much data to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scale {
    /// About 800 images: for tests (well under a second).
    Tiny,
    /// About 35,000 images: for experiments (seconds).
    Small,
    /// Ten times `Small`.
    Full,
}

impl Scale {
    pub const ALL: [Scale; 3] = [Scale::Tiny, Scale::Small, Scale::Full];

    pub fn name(self) -> &'static str {
        match self {
            Scale::Tiny => "tiny",
            Scale::Small => "small",
            Scale::Full => "full",
        }
    }

    /// Examples per split (train, val, test) of a task: questions, statements, images or
    /// sentences.
    pub fn sizes(self, task: &str) -> [usize; 3] {
        let small = match task {
            "vqa" => [6000, 1000, 3000],
            "retrieval" => [4000, 500, 1000],
            "nlvr2" => [4000, 500, 1000],
            "segmentation" => [2000, 250, 500],
            "shape_cls" | "count_cls" => [2000, 250, 750],
            _ => [4000, 500, 1000],
        };
        match self {
            Scale::Tiny => match task {
                "vqa" => [160, 40, 80],
                "nlvr2" => [64, 16, 32],
                "retrieval" => [64, 16, 32],
                "caption_colour" | "caption_count" => [96, 24, 48],
                _ => [32, 8, 20],
            },
            Scale::Small => small,
            Scale::Full => small.map(|n| n * 10),
        }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scale {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        Scale::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| DataError::UnknownName {
                what: "scale",
                name: s.to_string(),
                valid: Scale::ALL.map(Scale::name).join(", "),
            })
    }
}

/// What to generate. `SynthConfig::new(seed, scale)` gives the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    pub scale: Scale,
    /// Image side in pixels, 24..=512 (default 32).
    pub image_size: u32,
    /// Objects per scene, 1 <= min <= max <= 9 (default 1..=5). The single-object images of
    /// `shape_cls` ignore them.
    pub min_objects: u32,
    pub max_objects: u32,
    /// Probability in [0, 1] that a filler object is a near miss of what the text is about
    /// (default 0.5).
    pub distractors: f64,
    /// Background noise amplitude in grey levels, 0..=30 (default 8).
    pub noise: u8,
}

impl SynthConfig {
    pub fn new(seed: u64, scale: Scale) -> Self {
        Self {
            seed,
            scale,
            image_size: 32,
            min_objects: 1,
            max_objects: 5,
            distractors: 0.5,
            noise: 8,
        }
    }

    /// Checks every knob; the error names the knob and its valid range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String, allowed: &str| {
            Err(DataError::OutOfRange {
                what,
                allowed: allowed.to_string(),
            })
        };
        if !(24..=512).contains(&self.image_size) {
            return bad(
                format!("image size {}", self.image_size),
                "must be between 24 and 512 pixels",
            );
        }
        let cells = GRID * GRID;
        if self.min_objects < 1 || self.min_objects > self.max_objects || self.max_objects > cells {
            return bad(
                format!(
                    "objects per scene {}..={}",
                    self.min_objects, self.max_objects
                ),
                "need 1 <= min <= max <= 9",
            );
        }
        if !(0.0..=1.0).contains(&self.distractors) {
            return bad(
                format!("distractors {}", self.distractors),
                "must be a probability in [0, 1]",
            );
        }
        if self.noise > MAX_NOISE {
            return bad(format!("noise {}", self.noise), "must be at most 30");
        }
        Ok(())
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self::new(0, Scale::Tiny)
    }
}

/// The task names, in the order they are written.
pub const TASKS: [&str; 8] = [
    "vqa",
    "retrieval",
    "nlvr2",
    "segmentation",
    "shape_cls",
    "count_cls",
    "caption_colour",
    "caption_count",
];

/// Generates the suite into `out` (atomically: nothing appears unless it all succeeds) and
/// returns its manifest, also written to `out/suite.json`. Fails if `out` exists and `force`
/// is false, or a knob is out of range (before anything is written).
pub fn generate(cfg: &SynthConfig, out: &Path, force: bool, progress: bool) -> Result<Manifest> {
    cfg.validate()?;
    let suite = SuiteDir::create(out, force)?;
    let items: usize = TASKS
        .iter()
        .map(|t| {
            let n: usize = cfg.scale.sizes(t).iter().sum();
            if *t == "nlvr2" { n / 2 } else { n }
        })
        .sum();
    let pb = mmerge_sink::progress_bar("", items as u64, progress);
    let ctx = Ctx::new(cfg, &suite, pb);
    let mut tasks = Vec::new();
    ctx.pb.set_message("vqa");
    tasks.push(vqa::write(&ctx)?);
    ctx.pb.set_message("retrieval");
    tasks.push(retrieval::write(&ctx)?);
    ctx.pb.set_message("nlvr2");
    tasks.push(nlvr2::write(&ctx)?);
    ctx.pb.set_message("images");
    tasks.extend(vision::write(&ctx)?);
    ctx.pb.set_message("text");
    tasks.extend(text::write(&ctx)?);
    let manifest = Manifest {
        schema: SCHEMA.to_string(),
        name: "synthetic".to_string(),
        generator: format!(
            "mmerge {} data synth (image_size {}, objects {}..={}, distractors {}, noise {})",
            env!("CARGO_PKG_VERSION"),
            cfg.image_size,
            cfg.min_objects,
            cfg.max_objects,
            cfg.distractors,
            cfg.noise
        ),
        seed: Some(cfg.seed),
        scale: Some(cfg.scale.name().to_string()),
        tasks,
        sources: Vec::new(),
    };
    suite.write_json(crate::layout::MANIFEST, &manifest)?;
    ctx.pb.finish_and_clear();
    suite.finish()?;
    Ok(manifest)
}
