//! Image classification as an image folder: `<root>/<split>/<class>/<name>.png|jpg`.
//!
//! The layout of torchvision's `ImageFolder`
//! (<https://pytorch.org/vision/stable/generated/torchvision.datasets.ImageFolder.html>):
//! one subfolder per class inside the split's folder. Classes are the subfolder names in
//! byte order (or a list given by the caller, whose order sets the label indices); images
//! are the files ending in `.png`, `.jpg` or `.jpeg` (any case), in byte order of their
//! names; examples come class by class.
//!
//! Deviations from torchvision (which accepts more extensions and ignores everything else):
//! entries whose names start with `.` are ignored; any other file that is not an image, any
//! file directly in the split folder, and a subfolder that is not in a given class list are
//! bad records (skippable with [`ReadOptions::skip_bad`]). A class with no images is an
//! error unless [`ImageFolderOptions::allow_empty_class`]; a split with no images is
//! [`DataError::EmptySplit`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{Loaded, ReadOptions, Skipper, bad};
use crate::error::{DataError, Result, io};
use crate::image::ImageRef;

/// How to read an image folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFolderOptions {
    /// The classes, in label order; `None`: the subfolder names, sorted.
    pub classes: Option<Vec<String>>,
    /// Accept a class with no images (or, with a given list, no folder).
    pub allow_empty_class: bool,
    pub read: ReadOptions,
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageExample {
    pub image: ImageRef,
    /// Index into [`ImageFolderSplit::classes`].
    pub label: usize,
}

/// A split of an image folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolderSplit {
    pub classes: Vec<String>,
    pub examples: Vec<ImageExample>,
}

/// Whether a file name has one of the accepted image extensions.
pub fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".png", ".jpg", ".jpeg"]
        .iter()
        .any(|e| lower.len() > e.len() && lower.ends_with(e))
}

/// The entries of a folder (hidden ones left out), sorted by name.
fn entries(dir: &Path) -> Result<Vec<(OsString, PathBuf, bool)>> {
    let mut v = Vec::new();
    for e in io(dir, std::fs::read_dir(dir))? {
        let e = io(dir, e)?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        // Follows symbolic links.
        let is_dir = io(&path, std::fs::metadata(&path))?.is_dir();
        v.push((name, path, is_dir));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Reads the split folder `split_dir` (e.g. `<root>/train`).
pub fn read_image_folder(
    split_dir: &Path,
    opts: &ImageFolderOptions,
) -> Result<Loaded<ImageFolderSplit>> {
    let split = split_dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut skipper = Skipper::new(opts.read);
    let top = entries(split_dir)?;
    let mut folders: Vec<(String, PathBuf)> = Vec::new();
    for (name, path, is_dir) in top {
        let name_s = name.to_string_lossy().into_owned();
        let r = if !is_dir {
            Err(bad(
                &path,
                format!("file `{name_s}`"),
                format!("not in a class folder of {}", split_dir.display()),
            ))
        } else if name.to_str().is_none() {
            Err(bad(
                &path,
                format!("class folder `{name_s}`"),
                "name is not UTF-8",
            ))
        } else if let Some(classes) = &opts.classes
            && !classes.contains(&name_s)
        {
            Err(bad(
                &path,
                format!("class folder `{name_s}`"),
                format!("not one of the given classes {classes:?}"),
            ))
        } else {
            Ok(())
        };
        if skipper.check(r)?.is_some() {
            folders.push((name_s, path));
        }
    }
    let classes: Vec<String> = match &opts.classes {
        Some(c) => {
            if let Some(label) = super::first_duplicate(c) {
                return Err(DataError::DuplicateLabel {
                    list: "image folder classes",
                    label,
                });
            }
            c.clone()
        }
        None => folders.iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut examples = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let dir = split_dir.join(class);
        let mut n = 0;
        if folders.iter().any(|(f, _)| f == class) {
            for (name, path, is_dir) in entries(&dir)? {
                let name_s = name.to_string_lossy().into_owned();
                let r = if !is_dir && is_image_name(&name_s) {
                    Ok(path)
                } else {
                    Err(bad(
                        &path,
                        format!("file `{class}/{name_s}`"),
                        "not a .png, .jpg or .jpeg image",
                    ))
                };
                if let Some(p) = skipper.check(r)? {
                    examples.push(ImageExample {
                        image: ImageRef::new(p),
                        label,
                    });
                    n += 1;
                }
            }
        }
        if n == 0 && !opts.allow_empty_class {
            return Err(bad(
                &dir,
                format!("class `{class}`"),
                "has no images (allow_empty_class is off)",
            ));
        }
    }
    if examples.is_empty() {
        return Err(DataError::EmptySplit {
            path: split_dir.to_path_buf(),
            split,
        });
    }
    Ok(skipper.finish(ImageFolderSplit { classes, examples }))
}
