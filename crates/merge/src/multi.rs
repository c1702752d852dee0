//! Multi-document configs, as `mergekit-multi` runs them: several merges in one YAML file,
//! separated by `---` lines, each an ordinary merge config plus an optional `name`.
//!
//! - A named merge is written to `INTERMEDIATE/<name>`; the one unnamed merge (at most one) to
//!   the output folder. A model reference equal to a merge's name reads that merge's output, so
//!   later merges build on earlier ones; merges run in dependency order (a cycle is an error).
//! - Intermediate outputs are kept, as mergekit keeps them, and an intermediate that already
//!   holds a `config.json` and a model file is not merged again (mergekit's default `--lazy`);
//!   `force` merges every document again.
//! - Errors name the file line: each document is parsed with its own lines where they are in
//!   the file.
//!
//! Deviation: mergekit-multi also runs a file whose merges are all named (no output folder);
//! here the output folder receives the unnamed merge, so such a file is refused by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use crate::config::{MergeConfig, Seg, locate};
use crate::error::{MergeError, Result};
use crate::plan::MergePlan;
use crate::{MergeOptions, MergeSummary};

/// One document of a config file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Its `name`, or `None` for the final merge.
    pub name: Option<String>,
    /// The 1-based file line where the document starts.
    pub line: usize,
    /// The document's text, preceded by blank lines so that its line numbers are the file's.
    pub text: String,
    pub config: MergeConfig,
}

/// Splits `text` into its YAML documents (at lines `---` and `...`); empty ones are dropped.
/// Each keeps its file line numbers.
pub fn split(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut has_content = false;
    for (i, line) in text.lines().enumerate() {
        let marker = line.trim_end();
        if marker == "---" || marker == "..." || marker.starts_with("--- ") {
            if has_content {
                docs.push((start + 1, std::mem::take(&mut current)));
            }
            current = "\n".repeat(i + 1);
            start = i + 1;
            has_content = false;
            continue;
        }
        if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            has_content = true;
        }
        current.push_str(line);
        current.push('\n');
    }
    if has_content {
        docs.push((start + 1, current));
    }
    docs
}

/// Parses every document of a config file and checks the names: unique, at most one unnamed.
pub fn documents(text: &str, path: &Path) -> Result<Vec<Document>> {
    let err = |line: usize, message: String| MergeError::Config {
        path: path.to_path_buf(),
        line: Some(line),
        message,
    };
    let mut docs: Vec<Document> = Vec::new();
    for (line, doc_text) in split(text) {
        let config = MergeConfig::from_yaml(&doc_text, path)?;
        let name = config.name.clone();
        let name_line = locate(&doc_text, &[Seg::Key("name")]).unwrap_or(line);
        if let Some(prev) = docs.iter().find(|d| d.name == name) {
            return Err(err(
                name_line,
                match &name {
                    Some(n) => format!(
                        "merge name `{n}` is used twice (first at line {})",
                        prev.line
                    ),
                    None => format!(
                        "a second merge without `name` (the first starts at line {}); every merge but the final one needs a `name`",
                        prev.line
                    ),
                },
            ));
        }
        docs.push(Document {
            name,
            line,
            text: doc_text,
            config,
        });
    }
    Ok(docs)
}

/// The names of other documents that `doc` reads.
fn needs<'a>(doc: &'a Document, names: &BTreeSet<&str>) -> Vec<&'a str> {
    doc.config
        .model_refs()
        .into_iter()
        .filter(|r| names.contains(r))
        .collect()
}

/// The documents in an order where every merge runs after the merges it reads.
pub fn order(docs: &[Document], path: &Path) -> Result<Vec<usize>> {
    let names: BTreeSet<&str> = docs.iter().filter_map(|d| d.name.as_deref()).collect();
    let index: BTreeMap<&str, usize> = docs
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.name.as_deref().map(|n| (n, i)))
        .collect();
    // 0 = not visited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; docs.len()];
    let mut out = Vec::with_capacity(docs.len());
    fn visit(
        i: usize,
        docs: &[Document],
        names: &BTreeSet<&str>,
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        out: &mut Vec<usize>,
        path: &Path,
    ) -> Result<()> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                return Err(MergeError::Config {
                    path: path.to_path_buf(),
                    line: Some(docs[i].line),
                    message: format!(
                        "merge `{}` depends on itself through the models it reads",
                        docs[i].name.as_deref().unwrap_or("(final)")
                    ),
                });
            }
            _ => {}
        }
        state[i] = 1;
        for n in needs(&docs[i], names) {
            visit(index[n], docs, names, index, state, out, path)?;
        }
        state[i] = 2;
        out.push(i);
        Ok(())
    }
    for i in 0..docs.len() {
        visit(i, docs, &names, &index, &mut state, &mut out, path)?;
    }
    Ok(out)
}

/// Whether `dir` already holds a merged model (mergekit's test for skipping a merge).
fn has_model(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && ["model.safetensors", "model.safetensors.index.json"]
            .iter()
            .any(|f| dir.join(f).is_file())
}

/// What one document of a multi-document run did.
#[derive(Debug, Clone)]
pub enum Outcome {
    Merged(MergeSummary),
    /// An intermediate that was already on disk.
    Kept(PathBuf),
}

/// Runs every document of `config` (see the module docs): named merges into `intermediate`,
/// the unnamed one into `opts.out`. Returns (name, outcome) in the order they ran.
pub fn merge_documents(
    config: &Path,
    intermediate: &Path,
    opts: &MergeOptions,
    progress: &ProgressBar,
) -> Result<Vec<(Option<String>, Outcome)>> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| MergeError::Core(mmerge_core::CoreError::io(config, e)))?;
    let mut docs = documents(&text, config)?;
    if !docs.iter().any(|d| d.name.is_none()) {
        return Err(MergeError::Config {
            path: config.to_path_buf(),
            line: None,
            message: "every merge has a `name`; leave the final one unnamed: it is written to the output folder".into(),
        });
    }
    let order = order(&docs, config)?;
    let dirs: BTreeMap<String, PathBuf> = docs
        .iter()
        .filter_map(|d| d.name.clone())
        .map(|n| {
            let dir = intermediate.join(&n);
            (n, dir)
        })
        .collect();
    let mut done = Vec::with_capacity(docs.len());
    for i in order {
        let doc = &mut docs[i];
        doc.config.model_dirs = dirs.clone();
        if let Some(n) = opts.numerics {
            doc.config = doc.config.clone().with_numerics(n, config)?;
        }
        let out = match &doc.name {
            Some(n) => dirs[n].clone(),
            None => opts.out.clone(),
        };
        if doc.name.is_some() && !opts.force && has_model(&out) {
            done.push((doc.name.clone(), Outcome::Kept(out)));
            continue;
        }
        let plan = MergePlan::new(&doc.config, config, opts.seed)?;
        let mut run_opts = opts.clone();
        run_opts.out = out;
        progress.reset();
        let summary = crate::run(&plan, &doc.text, &run_opts, progress)?;
        done.push((doc.name.clone(), Outcome::Merged(summary)));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_file_lines() {
        let text = "---\nname: a\nmerge_method: linear\nmodels:\n  - model: x\n---\n# final\n\nmerge_method: bad\n";
        let docs = split(text);
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].0, docs[1].0), (2, 7));
        let e = documents(text, Path::new("m.yml")).unwrap_err().to_string();
        assert!(e.contains("m.yml:9: unknown merge_method `bad`"), "{e}");
    }

    #[test]
    fn names_are_unique_and_dependencies_ordered() {
        let m = |name: &str, models: &[&str]| {
            let list: String = models.iter().map(|m| format!("  - model: {m}\n")).collect();
            let head = if name.is_empty() {
                String::new()
            } else {
                format!("name: {name}\n")
            };
            format!("{head}merge_method: linear\nmodels:\n{list}")
        };
        let p = Path::new("m.yml");
        let text = [m("", &["ab", "c"]), m("ab", &["a", "b"])].join("---\n");
        let docs = documents(&text, p).unwrap();
        assert_eq!(order(&docs, p).unwrap(), vec![1, 0]);

        let twice = [m("x", &["a"]), m("x", &["b"])].join("---\n");
        let e = documents(&twice, p).unwrap_err().to_string();
        assert!(
            e.contains("m.yml:6: merge name `x` is used twice (first at line 1)"),
            "{e}"
        );

        let cycle = [m("x", &["y"]), m("y", &["x"]), m("", &["x"])].join("---\n");
        let docs = documents(&cycle, p).unwrap();
        let e = order(&docs, p).unwrap_err().to_string();
        assert!(e.contains("depends on itself"), "{e}");
    }
}
