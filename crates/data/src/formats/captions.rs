//! Image captions: COCO's `captions_<split>.json`, and Karpathy's split file
//! (`dataset_coco.json`, `dataset_flickr30k.json`), the standard retrieval splits.
//!
//! Sources: COCO caption annotations, <https://cocodataset.org/#format-data>; Karpathy's
//! splits, `caption_datasets.zip` from <https://cs.stanford.edu/people/karpathy/deepimagesent/>
//! (COCO: 82,783 train + 30,504 restval + 5,000 val + 5,000 test images; Flickr30k:
//! 29,000 train + 1,014 val + 1,000 test).
//!
//! Both read into a [`RetrievalSplit`]. Our choices: captions are the `raw` text with
//! surrounding whitespace trimmed (Karpathy's `tokens` are not used); an image's id is
//! Karpathy's `imgid` (not `cocoid`) or COCO's `id`; an image without captions is a bad
//! record. **Duplicate captions count as hits** (see [`RetrievalSplit`]); the groups of
//! images that share a caption are written to `equivalent_captions.json`
//! ([`EquivalentGroup`]). Recall over a score matrix, and its chance level, are in
//! [`crate::score`] (ties count against the query).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Loaded, ReadOptions, Skipper, bad, existing_image, read_json, split_name, write_json};
use crate::error::{DataError, Result};
use crate::image::ImageRef;

/// COCO `captions_<split>.json` (only the fields we use; others are ignored on read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCaptionsFile {
    pub images: Vec<CocoImage>,
    pub annotations: Vec<CocoCaption>,
}

/// One image entry of a COCO file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
}

/// One caption of a COCO file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCaption {
    pub id: u64,
    pub image_id: u64,
    pub caption: String,
}

/// Karpathy's `dataset_<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KarpathyFile {
    pub images: Vec<KarpathyImage>,
    pub dataset: String,
}

/// One image with its captions and split (`train`, `restval`, `val` or `test`). COCO entries
/// have `filepath` (the folder, e.g. `val2014`) and `cocoid`; Flickr30k entries have neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KarpathyImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filepath: Option<String>,
    pub filename: String,
    pub imgid: u64,
    pub split: String,
    pub sentences: Vec<KarpathySentence>,
    pub sentids: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cocoid: Option<u64>,
}

/// One caption: `raw` text and its lower-cased, punctuation-free `tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KarpathySentence {
    pub tokens: Vec<String>,
    pub raw: String,
    pub imgid: u64,
    pub sentid: u64,
}

// ---------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------

/// A split of Karpathy's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KarpathySplit {
    Train,
    Restval,
    Val,
    Test,
}

impl KarpathySplit {
    /// The name used in the file's `split` field.
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Restval => "restval",
            Self::Val => "val",
            Self::Test => "test",
        }
    }

    /// Parses `train`, `restval`, `val` or `test`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "train" => Self::Train,
            "restval" => Self::Restval,
            "val" => Self::Val,
            "test" => Self::Test,
            _ => return None,
        })
    }
}

impl std::str::FromStr for KarpathySplit {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s).ok_or_else(|| DataError::UnknownName {
            what: "Karpathy split",
            name: s.to_string(),
            valid: "train, restval, val, test".into(),
        })
    }
}

/// Where Karpathy's file is and which part of it to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KarpathySource {
    /// `dataset_coco.json`, `dataset_flickr30k.json`, or a suite's `dataset.json`.
    pub file: PathBuf,
    /// Images are `image_root/filepath/filename`, or `image_root/filename` without
    /// `filepath` (Flickr30k).
    pub image_root: PathBuf,
    pub split: KarpathySplit,
    /// With [`KarpathySplit::Train`], also take the `restval` images (the usual "Karpathy
    /// train": 82,783 + 30,504 = 113,287 COCO images).
    pub fold_restval: bool,
}

impl KarpathySource {
    /// Reads the split: images in file order, each with its captions (`raw`, trimmed) in
    /// file order.
    ///
    /// Errors: a duplicate `imgid` (not skippable); an entry whose `split` is not one of the
    /// four, whose sentences name another `imgid`, whose `sentids` differ from its
    /// sentences' ids, or that has no sentences, and a missing image (these only in the
    /// split read) — skippable; no images is [`DataError::EmptySplit`].
    pub fn read(&self, opts: ReadOptions) -> Result<Loaded<RetrievalSplit>> {
        let path = &self.file;
        let f: KarpathyFile = read_json(path)?;
        let mut seen = HashSet::with_capacity(f.images.len());
        for im in &f.images {
            if !seen.insert(im.imgid) {
                return Err(bad(
                    path,
                    karpathy_record(im),
                    "imgid appears more than once",
                ));
            }
        }
        let mut skipper = Skipper::new(opts);
        let mut b = Builder::default();
        for im in &f.images {
            if let Some(Some((image, caps))) = skipper.check(self.entry(im))? {
                b.push(image, im.imgid, caps);
            }
        }
        let split = match (self.split, self.fold_restval) {
            (KarpathySplit::Train, true) => "train+restval".to_string(),
            (s, _) => s.name().to_string(),
        };
        let rs = b.finish(path, &split)?;
        Ok(skipper.finish(rs))
    }

    /// `Ok(None)` for an image of another split.
    fn entry(&self, im: &KarpathyImage) -> Result<Option<(ImageRef, Vec<String>)>> {
        let path = &self.file;
        let record = karpathy_record(im);
        let split = KarpathySplit::parse(&im.split).ok_or_else(|| {
            bad(
                path,
                &record,
                format!("split `{}`: expected train, restval, val or test", im.split),
            )
        })?;
        let wanted = split == self.split
            || (self.fold_restval
                && self.split == KarpathySplit::Train
                && split == KarpathySplit::Restval);
        if !wanted {
            return Ok(None);
        }
        if im.sentences.is_empty() {
            return Err(bad(path, &record, "no sentences"));
        }
        if let Some(s) = im.sentences.iter().find(|s| s.imgid != im.imgid) {
            return Err(bad(
                path,
                &record,
                format!("sentence {} has imgid {}", s.sentid, s.imgid),
            ));
        }
        let ids: Vec<u64> = im.sentences.iter().map(|s| s.sentid).collect();
        if ids != im.sentids {
            return Err(bad(
                path,
                &record,
                format!(
                    "sentids {:?} but the sentences' ids are {ids:?}",
                    im.sentids
                ),
            ));
        }
        let mut file = self.image_root.clone();
        if let Some(fp) = &im.filepath {
            file.push(fp);
        }
        file.push(&im.filename);
        let image = existing_image(path, &record, file)?;
        let caps = im
            .sentences
            .iter()
            .map(|s| s.raw.trim().to_string())
            .collect();
        Ok(Some((image, caps)))
    }
}

fn karpathy_record(im: &KarpathyImage) -> String {
    format!("imgid {} ({})", im.imgid, im.filename)
}

/// Reads a COCO `captions_<split>.json`: images in file order (ids `id`, files
/// `image_dir/file_name`), each with its captions (trimmed) in annotation order.
///
/// Errors: a duplicate image id (not skippable); a caption of an unknown image, an image
/// without captions, a missing image (skippable); no images is [`DataError::EmptySplit`].
pub fn read_coco_captions(
    file: &Path,
    image_dir: &Path,
    opts: ReadOptions,
) -> Result<Loaded<RetrievalSplit>> {
    let f: CocoCaptionsFile = read_json(file)?;
    let mut by_id: HashMap<u64, usize> = HashMap::with_capacity(f.images.len());
    for (i, im) in f.images.iter().enumerate() {
        if by_id.insert(im.id, i).is_some() {
            return Err(bad(
                file,
                format!("image id {}", im.id),
                "image id appears more than once",
            ));
        }
    }
    let mut skipper = Skipper::new(opts);
    let mut caps: Vec<Vec<String>> = vec![Vec::new(); f.images.len()];
    for a in &f.annotations {
        let r = match by_id.get(&a.image_id) {
            Some(&i) => Ok(i),
            None => Err(bad(
                file,
                format!("annotation id {}", a.id),
                format!("image_id {} is not among the images", a.image_id),
            )),
        };
        if let Some(i) = skipper.check(r)? {
            caps[i].push(a.caption.trim().to_string());
        }
    }
    let mut b = Builder::default();
    for (im, c) in f.images.iter().zip(caps) {
        let record = format!("image id {} ({})", im.id, im.file_name);
        let r = if c.is_empty() {
            Err(bad(file, &record, "no captions"))
        } else {
            existing_image(file, &record, image_dir.join(&im.file_name))
        };
        if let Some(image) = skipper.check(r)? {
            b.push(image, im.id, c);
        }
    }
    let rs = b.finish(file, &split_name(file))?;
    Ok(skipper.finish(rs))
}

#[derive(Debug, Default)]
struct Builder {
    images: Vec<ImageRef>,
    image_ids: Vec<u64>,
    captions: Vec<String>,
    caption_image: Vec<usize>,
}

impl Builder {
    fn push(&mut self, image: ImageRef, id: u64, caps: Vec<String>) {
        let i = self.images.len();
        self.images.push(image);
        self.image_ids.push(id);
        self.caption_image
            .extend(std::iter::repeat_n(i, caps.len()));
        self.captions.extend(caps);
    }

    fn finish(self, path: &Path, split: &str) -> Result<RetrievalSplit> {
        if self.images.is_empty() {
            return Err(DataError::EmptySplit {
                path: path.to_path_buf(),
                split: split.to_string(),
            });
        }
        RetrievalSplit::new(
            self.images,
            self.image_ids,
            self.captions,
            self.caption_image,
        )
    }
}

// ---------------------------------------------------------------------------------------
// Retrieval split, duplicates and recall
// ---------------------------------------------------------------------------------------

/// A retrieval gallery: images, captions, which image owns each caption, and which images
/// count as hits for each caption.
///
/// **Duplicates count.** When several images have an identical caption (identical after
/// [`caption_key`]: trimmed, lower-cased, runs of whitespace collapsed to one space),
/// retrieving any of them for that caption is a hit (text → image), and for each of them
/// every copy of that caption is a hit (image → text).
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalSplit {
    pub images: Vec<ImageRef>,
    /// The dataset's id of each image (Karpathy `imgid`, COCO `id`).
    pub image_ids: Vec<u64>,
    pub captions: Vec<String>,
    /// The index of the image that owns each caption.
    pub caption_image: Vec<usize>,
    /// For each caption, the sorted indices of the images that are hits for it: its owner
    /// and every image with an identical caption.
    pub equivalent: Vec<Vec<usize>>,
}

impl RetrievalSplit {
    /// Builds a split and its equivalence sets. Every image must own at least one caption
    /// and every owner index must be in range ([`DataError::Shape`] otherwise).
    pub fn new(
        images: Vec<ImageRef>,
        image_ids: Vec<u64>,
        captions: Vec<String>,
        caption_image: Vec<usize>,
    ) -> Result<Self> {
        let invalid = |reason: String| DataError::Shape {
            what: "retrieval split",
            reason,
        };
        if image_ids.len() != images.len() || caption_image.len() != captions.len() {
            return Err(invalid(format!(
                "{} images, {} image ids, {} captions, {} caption owners",
                images.len(),
                image_ids.len(),
                captions.len(),
                caption_image.len()
            )));
        }
        let mut owned = vec![false; images.len()];
        for (c, &i) in caption_image.iter().enumerate() {
            match owned.get_mut(i) {
                Some(o) => *o = true,
                None => {
                    return Err(invalid(format!(
                        "caption {c} belongs to image {i} of {}",
                        images.len()
                    )));
                }
            }
        }
        if let Some(i) = owned.iter().position(|o| !o) {
            return Err(invalid(format!(
                "image {i} (id {}) has no caption",
                image_ids[i]
            )));
        }
        let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
        for (c, cap) in captions.iter().enumerate() {
            groups
                .entry(caption_key(cap))
                .or_default()
                .push(caption_image[c]);
        }
        for g in groups.values_mut() {
            g.sort_unstable();
            g.dedup();
        }
        let equivalent = captions
            .iter()
            .map(|cap| groups.get(&caption_key(cap)).cloned().unwrap_or_default())
            .collect();
        Ok(Self {
            images,
            image_ids,
            captions,
            caption_image,
            equivalent,
        })
    }

    /// For each image, the sorted indices of the captions that are hits for it (its own
    /// and every identical caption of another image).
    pub fn image_hits(&self) -> Vec<Vec<usize>> {
        let mut hits = vec![Vec::new(); self.images.len()];
        for (c, imgs) in self.equivalent.iter().enumerate() {
            for &i in imgs {
                hits[i].push(c);
            }
        }
        hits
    }

    /// The groups of two or more images that share a caption, for
    /// `equivalent_captions.json`: sorted by caption key, image ids sorted.
    pub fn equivalent_groups(&self) -> Vec<EquivalentGroup> {
        let mut seen = HashSet::new();
        let mut groups = Vec::new();
        for (cap, imgs) in self.captions.iter().zip(&self.equivalent) {
            let key = caption_key(cap);
            if imgs.len() >= 2 && seen.insert(key.clone()) {
                let mut images: Vec<u64> = imgs.iter().map(|&i| self.image_ids[i]).collect();
                images.sort_unstable();
                groups.push(EquivalentGroup {
                    caption: key,
                    images,
                });
            }
        }
        groups.sort_by(|a, b| a.caption.cmp(&b.caption));
        groups
    }
}

/// The form in which captions are compared for duplicates: trimmed, lower-cased, runs of
/// whitespace collapsed to one space.
pub fn caption_key(caption: &str) -> String {
    caption
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// One entry of `equivalent_captions.json` (a JSON array of these): a caption (as
/// [`caption_key`] gives it) shared by two or more images, and those images' ids, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EquivalentGroup {
    pub caption: String,
    pub images: Vec<u64>,
}

/// Writes `equivalent_captions.json` (atomically).
pub fn write_equivalent(path: &Path, groups: &[EquivalentGroup]) -> Result<()> {
    write_json(path, groups)
}

/// Reads `equivalent_captions.json`; a group with fewer than two images, or unsorted or
/// repeated ids, is a [`DataError::BadRecord`].
pub fn read_equivalent(path: &Path) -> Result<Vec<EquivalentGroup>> {
    let groups: Vec<EquivalentGroup> = read_json(path)?;
    for (i, g) in groups.iter().enumerate() {
        if g.images.len() < 2 || g.images.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(
                path,
                format!("group {i} (`{}`)", g.caption),
                "needs two or more image ids, sorted and distinct",
            ));
        }
    }
    Ok(groups)
}

/// The groups of images (by `imgid`, sorted) that share a caption (by [`caption_key`]), over
/// every split of a Karpathy file, sorted by caption: what a suite's
/// `equivalent_captions.json` holds.
pub fn equivalent_groups_of(images: &[KarpathyImage]) -> Vec<EquivalentGroup> {
    let mut by_key: std::collections::BTreeMap<String, std::collections::BTreeSet<u64>> =
        std::collections::BTreeMap::new();
    for im in images {
        for s in &im.sentences {
            by_key
                .entry(caption_key(&s.raw))
                .or_default()
                .insert(im.imgid);
        }
    }
    by_key
        .into_iter()
        .filter(|(_, ids)| ids.len() >= 2)
        .map(|(caption, ids)| EquivalentGroup {
            caption,
            images: ids.into_iter().collect(),
        })
        .collect()
}
