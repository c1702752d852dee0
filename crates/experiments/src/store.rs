//! The content-hashed run store: every stage of an experiment writes into
//! `runs/<kind>/<key>/`, where `<key>` is a [`StageKey`] of the stage's kind, its resolved
//! config and its inputs' keys. A stage already done is found by [`RunStore::lookup`] and
//! reused; one that is missing, half-written or damaged is recomputed, never read.
//!
//! # Layout
//!
//! ```text
//! runs/<kind>/<key>/            a finished stage: its outputs and stage.json
//! runs/<kind>/<key>/stage.json  kind, key, resolved config, input keys, git commit, command,
//!                               start/finish times, and a manifest (path, size, hash, mtime)
//!                               of every output file
//! runs/<kind>/<key>.failed/log.txt   the log of the last failed attempt (a retry replaces it)
//! runs/<kind>/.<anything>       scratch: temporary folders of writers (`core::atomic`) and
//!                               stages being discarded; never read
//! ```
//!
//! # Keys
//!
//! A [`StageKey`] is 128 bits: two 64-bit lanes of FNV-1a (`core::hash::fnv1a`) over the same
//! canonical bytes, each lane started from its own domain prefix and finished with the
//! SplitMix64 finaliser (`core::hash::splitmix64`) mixed with the length, so every input bit
//! reaches every output bit. The canonical bytes are a version tag, the kind name, the config
//! as canonical JSON ([`canonical_json`]: object keys sorted bytewise, no whitespace, scalars
//! as `serde_json` prints them) and the input keys in order. Changing any config value or any
//! input key changes the key; the order of keys in the config does not.
//!
//! Why not SHA-256: these keys name our own configs, nobody forges them, so we need freedom
//! from *accidental* collisions only, and the project keeps one home for hashing. The
//! birthday bound for n keys in b bits is about n²/2^(b+1): a run store holds thousands of
//! stages, and even a million (10¹²/2¹²⁹ ≈ 10⁻²⁷) are safe; were the two lanes fully
//! correlated (64 effective bits), a million stages would still collide with probability
//! 3·10⁻⁸. Besides, [`RunStore::lookup`] re-derives the key from the config and inputs recorded
//! in `stage.json`, so a stage is reused only if its record hashes to the key asked for.
//!
//! # Atomicity, killed writers, concurrency
//!
//! [`RunStore::begin`] builds the stage in a temporary sibling folder
//! ([`mmerge_core::atomic::AtomicDir`]); [`StageWriter::finish`] writes `stage.json` last and
//! renames the folder into place, so `runs/<kind>/<key>/` is either absent or whole. A killed
//! writer leaves only its hidden temporary folder: lookups never look at it (the stage is
//! `Missing`), the next writer in a process with the same id reuses (empties) it, and
//! [`RunStore::sweep`] removes scratch older than a given age (the runner calls it at start;
//! an age, not "all", so a live writer in another process is never swept from under it).
//!
//! Two writers of one key in one process are serialised: the second [`RunStore::begin`]
//! waits until the first writer is finished or dropped (the temporary folder is named by the
//! process id, so they could not share it). At [`StageWriter::finish`] the first valid stage
//! wins: a writer that finds the key already `Done` drops its own folder and returns the
//! existing stage. A `Corrupt` folder in the way is replaced.
//!
//! # Verification policy
//!
//! Hashing every output on every lookup would read every checkpoint each time the runner
//! plans (gigabytes). [`Verify::Quick`], the default, checks for each manifest entry that the
//! file exists and has its recorded size (a `stat`: catches missing and truncated files), and
//! re-hashes a file only when it is small (≤ [`QUICK_HASH_LIMIT`]; metrics, configs, logs) or
//! its modification time differs from the one recorded (catches same-size edits made by any
//! ordinary write, which updates the mtime). A same-size change that keeps the mtime (bit rot,
//! `touch -r`, a copy that preserves times over a damaged source) needs [`Verify::Full`],
//! which hashes every file (the runner's `--verify`). Half-written stages cannot appear at
//! all (atomic rename); a `stage.json` that is missing, unparsable, of another kind or key, or
//! whose config and inputs no longer hash to the key makes the stage `Corrupt`. Files in the
//! folder that the manifest does not list are ignored (never read as outputs).
//!
//! File hashes (`hash` in the manifest, [`HASH_SCHEME`]) are FNV-1a of each 1 MiB chunk,
//! folded as h ← splitmix64(h ⊕ fnv1a(chunk)) from h = fnv1a(""), finished with the length:
//! a streaming form of `core::hash::fnv1a`, which hashes whole slices.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mmerge_core::CoreError;
use mmerge_core::atomic::{AtomicDir, write_atomic};
use mmerge_core::hash::{fnv1a, splitmix64};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The name of a stage's record inside its folder.
pub const STAGE_JSON: &str = "stage.json";
/// The name of the log a failed stage keeps in `<key>.failed/`.
pub const FAILED_LOG: &str = "log.txt";
/// The version of `stage.json`.
pub const FORMAT: u32 = 1;
/// How the manifest's file hashes are made (see the module doc).
pub const HASH_SCHEME: &str = "fnv1a-1MiB-chunks-splitmix64-v1";
/// Files up to this size are re-hashed by every [`Verify::Quick`] lookup.
pub const QUICK_HASH_LIMIT: u64 = 64 * 1024;

const CHUNK: usize = 1 << 20;
const KEY_TAG: &[u8] = b"mmerge-stage-key/v1\0";

/// The run store's errors; each names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run store: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("run store: {0}")]
    Core(#[from] CoreError),
    #[error("run store: {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "run store: stage kind {kind:?} is not a valid folder name \
         (use 1-64 of a-z, 0-9, '-', '_', starting with a letter or digit)"
    )]
    BadKind { kind: String },
    #[error("run store: {text:?} is not a stage key (32 lowercase hex digits)")]
    BadKey { text: String },
    #[error(
        "run store: stage {kind}/{key}: the config and inputs given to finish hash to {actual}, \
         not to the key the stage was begun under"
    )]
    KeyMismatch {
        kind: String,
        key: StageKey,
        actual: StageKey,
    },
    #[error("run store: this thread is already writing {path} (finish or drop that writer first)")]
    AlreadyWriting { path: PathBuf },
    #[error("run store: {path}: outputs must be regular files or folders (no links)")]
    NotAFile { path: PathBuf },
    #[error("run store: {path}: stage outputs may not be named {STAGE_JSON} at the top level")]
    ReservedName { path: PathBuf },
}

impl StoreError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The run store's result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Keys

/// A stage's content hash: 128 bits, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageKey(u128);

impl StageKey {
    /// The key of a stage of `kind` with resolved `config` and inputs with keys `inputs`
    /// (in the stage's order).
    pub fn compute(kind: &str, config: &Value, inputs: &[StageKey]) -> StageKey {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(KEY_TAG);
        bytes.extend_from_slice(kind.as_bytes());
        bytes.push(0);
        write_canonical(config, &mut bytes);
        bytes.push(0);
        bytes.extend_from_slice(&(inputs.len() as u64).to_le_bytes());
        for k in inputs {
            bytes.extend_from_slice(&k.0.to_le_bytes());
        }
        let lane = |prefix: &[u8]| {
            let mut b = Vec::with_capacity(prefix.len() + bytes.len());
            b.extend_from_slice(prefix);
            b.extend_from_slice(&bytes);
            splitmix64(fnv1a(&b) ^ splitmix64(bytes.len() as u64))
        };
        let hi = lane(b"lane-a\0");
        let lo = lane(b"lane-b\0");
        StageKey((u128::from(hi) << 64) | u128::from(lo))
    }

    /// The key of a stage whose config is any serialisable value.
    pub fn of(kind: &str, config: &impl Serialize, inputs: &[StageKey]) -> Result<StageKey> {
        let v = serde_json::to_value(config).map_err(|source| StoreError::Json {
            path: PathBuf::from(format!("<{kind} config>")),
            source,
        })?;
        Ok(StageKey::compute(kind, &v, inputs))
    }

    /// Parses the 32-hex-digit form.
    pub fn parse(text: &str) -> Result<StageKey> {
        let bad = || StoreError::BadKey {
            text: text.to_string(),
        };
        if text.len() != 32
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        u128::from_str_radix(text, 16)
            .map(StageKey)
            .map_err(|_| bad())
    }

    /// The 32-hex-digit form (also what `Display` prints).
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

impl fmt::Display for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageKey({self})")
    }
}

impl Serialize for StageKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for StageKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StageKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `value` as canonical JSON: object keys sorted bytewise, no whitespace, strings and numbers
/// as `serde_json` prints them. Equal values give equal bytes whatever the order their keys
/// were written or parsed in.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    // Only valid UTF-8 is ever written (serde_json's own output and ASCII punctuation).
    String::from_utf8_lossy(&out).into_owned()
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // Serialising a scalar `Value` into a Vec cannot fail (no maps with non-string keys,
    // no I/O errors); `Value`'s own Display is the same text as a fallback.
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(v.to_string().as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// One output file of a stage, as recorded in `stage.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// The path relative to the stage folder, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The content hash ([`HASH_SCHEME`]), 16 hex digits.
    pub hash: String,
    /// Modification time in nanoseconds since the Unix epoch when the stage was finished
    /// (`None` where the file system gives none).
    pub mtime_ns: Option<u64>,
}

/// A finished stage's `stage.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecord {
    pub format: u32,
    pub kind: String,
    pub key: StageKey,
    /// The stage's resolved config.
    pub config: Value,
    /// The keys of the stage's inputs, in order.
    pub inputs: Vec<StageKey>,
    /// The git commit of the code that ran it (`None` outside a git checkout).
    pub git_commit: Option<String>,
    /// The command line that ran it.
    pub command: Vec<String>,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    pub hash_scheme: String,
    /// Every output file (sorted by path), `stage.json` itself excepted.
    pub files: Vec<FileEntry>,
}

/// What the runner knows about a stage when it finishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageMeta {
    /// The resolved config the key was computed from.
    pub config: Value,
    /// The input keys the key was computed from.
    pub inputs: Vec<StageKey>,
    pub git_commit: Option<String>,
    pub command: Vec<String>,
}

/// A finished, verified stage folder.
#[derive(Debug, Clone)]
pub struct StageDir {
    path: PathBuf,
    record: Box<StageRecord>,
}

impl StageDir {
    /// The stage folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its `stage.json`.
    pub fn record(&self) -> &StageRecord {
        &self.record
    }

    /// The path of output `rel` (a `/`-separated path relative to the stage folder).
    pub fn file(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

/// Why a stage folder cannot be trusted: the file concerned and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptReason {
    pub path: PathBuf,
    pub problem: String,
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

/// What [`RunStore::lookup`] found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A finished stage whose files match its manifest.
    Done(StageDir),
    /// No finished stage (maybe a failed attempt, see [`RunStore::failure_log`]).
    Missing,
    /// A stage folder that must not be read; [`RunStore::discard`] it and recompute.
    Corrupt(CorruptReason),
}

/// How much of a stage's outputs a lookup reads (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// Sizes always; content hashes for small files and for files whose mtime changed.
    #[default]
    Quick,
    /// Content hashes of every file.
    Full,
}

// ---------------------------------------------------------------------------------------------
// The store

/// A run store rooted at a folder (`runs/`).
#[derive(Debug, Clone)]
pub struct RunStore {
    root: PathBuf,
}

impl RunStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<RunStore> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        Ok(RunStore { root })
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of stage `kind`/`key` (whether or not it exists).
    pub fn stage_path(&self, kind: &str, key: &StageKey) -> Result<PathBuf> {
        check_kind(kind)?;
        Ok(self.root.join(kind).join(key.hex()))
    }

    /// The folder a failed attempt of `kind`/`key` keeps its log in.
    pub fn failed_path(&self, kind: &str, key: &StageKey) -> Result<PathBuf> {
        check_kind(kind)?;
        Ok(self.root.join(kind).join(format!("{}.failed", key.hex())))
    }

    /// The log of the last failed attempt of `kind`/`key`, if one is kept.
    pub fn failure_log(&self, kind: &str, key: &StageKey) -> Result<Option<PathBuf>> {
        let p = self.failed_path(kind, key)?.join(FAILED_LOG);
        Ok(p.is_file().then_some(p))
    }

    /// Looks stage `kind`/`key` up with [`Verify::Quick`].
    pub fn lookup(&self, kind: &str, key: &StageKey) -> Result<Lookup> {
        self.lookup_with(kind, key, Verify::Quick)
    }

    /// Looks stage `kind`/`key` up, verifying its outputs as `verify` says. I/O errors other
    /// than "not found" while reading the stage make it `Corrupt` (it cannot be trusted), and
    /// only an unusable kind name is an error.
    pub fn lookup_with(&self, kind: &str, key: &StageKey, verify: Verify) -> Result<Lookup> {
        let dir = self.stage_path(kind, key)?;
        Ok(inspect(&dir, kind, key, verify))
    }

    /// Starts writing stage `kind`/`key`: outputs go into [`StageWriter::path`]. Waits while
    /// another thread of this process writes the same stage.
    pub fn begin(&self, kind: &str, key: &StageKey) -> Result<StageWriter> {
        let dst = self.stage_path(kind, key)?;
        let parent = self.root.join(kind);
        std::fs::create_dir_all(&parent).map_err(|e| StoreError::io(&parent, e))?;
        let guard = KeyGuard::acquire(&dst)?;
        // force: a Corrupt folder in the way is replaced at finish (a Done one wins instead).
        let dir = AtomicDir::create(&dst, true)?;
        Ok(StageWriter {
            dir,
            kind: kind.to_string(),
            key: *key,
            failed: self.failed_path(kind, key)?,
            started: SystemTime::now(),
            _guard: guard,
        })
    }

    /// Removes stage `kind`/`key` (a `Corrupt` one, before recomputing it): it is first
    /// renamed aside to a hidden name, so lookups see it whole or not at all, then deleted.
    /// Nothing to remove is not an error.
    pub fn discard(&self, kind: &str, key: &StageKey) -> Result<()> {
        let dst = self.stage_path(kind, key)?;
        if std::fs::symlink_metadata(&dst).is_err() {
            return Ok(());
        }
        let aside = unique_scratch(&dst, "discarded");
        std::fs::rename(&dst, &aside).map_err(|e| StoreError::io(&dst, e))?;
        let res = if aside.is_dir() {
            std::fs::remove_dir_all(&aside)
        } else {
            std::fs::remove_file(&aside)
        };
        res.map_err(|e| StoreError::io(&aside, e))
    }

    /// Removes scratch left by killed writers and interrupted discards: hidden entries
    /// (`.<…>`) in every kind folder last modified more than `older_than` ago. Returns what
    /// was removed. Younger scratch may belong to a live writer and is kept.
    pub fn sweep(&self, older_than: Duration) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        let now = SystemTime::now();
        for kind in read_dir(&self.root)? {
            if !kind.is_dir() {
                continue;
            }
            for entry in read_dir(&kind)? {
                let hidden = entry
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if !hidden {
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(&entry) else {
                    continue;
                };
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                if age <= older_than {
                    continue;
                }
                let res = if meta.is_dir() {
                    std::fs::remove_dir_all(&entry)
                } else {
                    std::fs::remove_file(&entry)
                };
                match res {
                    Ok(()) => removed.push(entry),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(&entry, e)),
                }
            }
        }
        Ok(removed)
    }
}

/// A stage being written: fill [`StageWriter::path`], then [`StageWriter::finish`] or
/// [`StageWriter::fail`]. Dropped unfinished, it removes its temporary folder.
#[derive(Debug)]
pub struct StageWriter {
    dir: AtomicDir,
    kind: String,
    key: StageKey,
    failed: PathBuf,
    started: SystemTime,
    _guard: KeyGuard,
}

impl StageWriter {
    /// The temporary folder the stage writes its outputs into.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The folder the stage will have once finished.
    pub fn dst(&self) -> &Path {
        self.dir.dst()
    }

    /// The stage's key.
    pub fn key(&self) -> StageKey {
        self.key
    }

    /// Records `stage.json` (checking that `meta`'s config and inputs hash to the key) and
    /// renames the stage into place. If a valid stage of this key appeared meanwhile (another
    /// writer), this one's outputs are dropped and that stage is returned. Clears the log of
    /// an earlier failed attempt.
    pub fn finish(self, meta: StageMeta) -> Result<StageDir> {
        let actual = StageKey::compute(&self.kind, &meta.config, &meta.inputs);
        if actual != self.key {
            return Err(StoreError::KeyMismatch {
                kind: self.kind,
                key: self.key,
                actual,
            });
        }
        let tmp = self.dir.path().to_path_buf();
        if std::fs::symlink_metadata(tmp.join(STAGE_JSON)).is_ok() {
            return Err(StoreError::ReservedName {
                path: tmp.join(STAGE_JSON),
            });
        }
        let mut files = Vec::new();
        manifest(&tmp, "", &mut files)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let record = StageRecord {
            format: FORMAT,
            kind: self.kind.clone(),
            key: self.key,
            config: meta.config,
            inputs: meta.inputs,
            git_commit: meta.git_commit,
            command: meta.command,
            started_unix_ms: unix_ms(self.started),
            finished_unix_ms: unix_ms(SystemTime::now()),
            hash_scheme: HASH_SCHEME.to_string(),
            files,
        };
        let json_path = tmp.join(STAGE_JSON);
        let bytes = mmerge_core::json::to_pretty(&record).map_err(|source| StoreError::Json {
            path: json_path.clone(),
            source,
        })?;
        write_atomic(&json_path, &bytes)?;

        // First valid stage wins; a corrupt one in the way is replaced (AtomicDir's force).
        if let Lookup::Done(existing) =
            inspect(self.dir.dst(), &self.kind, &self.key, Verify::Quick)
        {
            return Ok(existing); // dropping self.dir removes this writer's folder
        }
        let path = self.dir.finish()?;
        if self.failed.exists() {
            let _ = std::fs::remove_dir_all(&self.failed);
        }
        Ok(StageDir {
            path,
            record: Box::new(record),
        })
    }

    /// Gives up on the stage: its outputs are dropped and `log` is kept in
    /// `<key>.failed/log.txt` (replacing an earlier attempt's), whose path is returned for the
    /// runner's report. A later lookup finds the stage `Missing`, so the next run retries it.
    pub fn fail(self, log: &str) -> Result<PathBuf> {
        let failed = AtomicDir::create(&self.failed, true)?;
        let log_path = failed.path().join(FAILED_LOG);
        write_atomic(&log_path, log.as_bytes())?;
        let dir = failed.finish()?;
        Ok(dir.join(FAILED_LOG))
    }
}

// ---------------------------------------------------------------------------------------------
// Verification

fn inspect(dir: &Path, kind: &str, key: &StageKey, verify: Verify) -> Lookup {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Missing,
        Err(e) => return corrupt(dir, format!("cannot be read: {e}")),
        Ok(m) if !m.is_dir() => return corrupt(dir, "is not a folder".into()),
        Ok(_) => {}
    }
    let json_path = dir.join(STAGE_JSON);
    let bytes = match std::fs::read(&json_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return corrupt(&json_path, "missing (the stage was never finished)".into());
        }
        Err(e) => return corrupt(&json_path, format!("cannot be read: {e}")),
    };
    let record: StageRecord = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return corrupt(&json_path, format!("not a complete stage record: {e}")),
    };
    if record.format != FORMAT || record.hash_scheme != HASH_SCHEME {
        return corrupt(
            &json_path,
            format!(
                "format {} / hash scheme {:?}, this build reads {FORMAT} / {HASH_SCHEME:?}",
                record.format, record.hash_scheme
            ),
        );
    }
    if record.kind != kind || record.key != *key {
        return corrupt(
            &json_path,
            format!("records stage {}/{}", record.kind, record.key),
        );
    }
    let derived = StageKey::compute(kind, &record.config, &record.inputs);
    if derived != *key {
        return corrupt(
            &json_path,
            format!("its config and inputs hash to {derived}, not to the folder's key"),
        );
    }
    for f in &record.files {
        if let Err(reason) = check_file(dir, f, verify) {
            return Lookup::Corrupt(reason);
        }
    }
    Lookup::Done(StageDir {
        path: dir.to_path_buf(),
        record: Box::new(record),
    })
}

fn corrupt(path: &Path, problem: String) -> Lookup {
    Lookup::Corrupt(CorruptReason {
        path: path.to_path_buf(),
        problem,
    })
}

fn check_file(dir: &Path, f: &FileEntry, verify: Verify) -> std::result::Result<(), CorruptReason> {
    let bad_name = f.path.is_empty()
        || f.path.starts_with('/')
        || f.path.contains('\\')
        || f.path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    let path = dir.join(&f.path);
    let reason = |problem: String| CorruptReason {
        path: path.clone(),
        problem,
    };
    if bad_name {
        return Err(reason("the manifest names a path outside the stage".into()));
    }
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(reason("missing".into())),
        Err(e) => return Err(reason(format!("cannot be read: {e}"))),
    };
    if !meta.is_file() {
        return Err(reason("is not a regular file".into()));
    }
    if meta.len() != f.size {
        return Err(reason(format!(
            "size {} bytes, the manifest says {} (truncated or rewritten)",
            meta.len(),
            f.size
        )));
    }
    let must_hash = match verify {
        Verify::Full => true,
        Verify::Quick => f.size <= QUICK_HASH_LIMIT || mtime_ns(&meta) != f.mtime_ns,
    };
    if must_hash {
        let h = hash_file(&path).map_err(|e| reason(format!("cannot be read: {e}")))?;
        if h != f.hash {
            return Err(reason(format!(
                "content hash {h}, the manifest says {} (modified)",
                f.hash
            )));
        }
    }
    Ok(())
}

fn manifest(dir: &Path, prefix: &str, out: &mut Vec<FileEntry>) -> Result<()> {
    for path in read_dir(dir)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(|e| StoreError::io(&path, e))?;
        if meta.is_dir() {
            manifest(&path, &rel, out)?;
        } else if meta.is_file() {
            let hash = hash_file(&path).map_err(|e| StoreError::io(&path, e))?;
            out.push(FileEntry {
                path: rel,
                size: meta.len(),
                hash,
                mtime_ns: mtime_ns(&meta),
            });
        } else {
            return Err(StoreError::NotAFile { path });
        }
    }
    Ok(())
}

/// The manifest hash of a file ([`HASH_SCHEME`]), 16 hex digits.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut h = fnv1a(b"");
    let mut len: u64 = 0;
    loop {
        // Fill the whole chunk (short reads would otherwise change the chunking).
        let mut n = 0;
        while n < CHUNK {
            let r = f.read(&mut buf[n..])?;
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            break;
        }
        h = splitmix64(h ^ fnv1a(&buf[..n]));
        len += n as u64;
        if n < CHUNK {
            break;
        }
    }
    Ok(format!("{:016x}", splitmix64(h ^ len)))
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn check_kind(kind: &str) -> Result<()> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && kind
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadKind {
            kind: kind.to_string(),
        })
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        out.push(e.map_err(|e| StoreError::io(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn mtime_ns(meta: &std::fs::Metadata) -> Option<u64> {
    let d = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(d.as_nanos()).ok()
}

/// A hidden, unique scratch name beside `path`, for a folder being deleted.
fn unique_scratch(path: &Path, what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = N.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{what}-{}-{n}", std::process::id()))
}

// ---------------------------------------------------------------------------------------------
// One writer per stage per process

type Held = (Mutex<HashMap<PathBuf, ThreadId>>, Condvar);

fn held() -> &'static Held {
    static HELD: OnceLock<Held> = OnceLock::new();
    HELD.get_or_init(|| (Mutex::new(HashMap::new()), Condvar::new()))
}

/// Marks a stage folder as being written by this thread until dropped.
#[derive(Debug)]
struct KeyGuard {
    path: PathBuf,
}

impl KeyGuard {
    fn acquire(path: &Path) -> Result<KeyGuard> {
        let (lock, cv) = held();
        let me = std::thread::current().id();
        // A poisoned lock only means another writer panicked; the map is still consistent.
        let mut map = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match map.get(path) {
                None => break,
                Some(t) if *t == me => {
                    return Err(StoreError::AlreadyWriting {
                        path: path.to_path_buf(),
                    });
                }
                Some(_) => map = cv.wait(map).unwrap_or_else(|p| p.into_inner()),
            }
        }
        map.insert(path.to_path_buf(), me);
        Ok(KeyGuard {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let (lock, cv) = held();
        let mut map = lock.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.path);
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = json!({"b": [1, {"z": 1.5, "a": null}], "a": "x\"y"});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":"x\"y","b":[1,{"a":null,"z":1.5}]}"#
        );
    }

    #[test]
    fn keys_parse_back_and_reject_junk() {
        let k = StageKey::compute("merge", &json!({}), &[]);
        assert_eq!(StageKey::parse(&k.hex()).unwrap(), k);
        for bad in ["", "xyz", &k.hex().to_uppercase(), &format!("{k}0")] {
            assert!(StageKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_must_be_plain_folder_names() {
        for bad in ["", "..", "a/b", ".x", "Merge", "a b"] {
            assert!(check_kind(bad).is_err(), "{bad}");
        }
        for good in ["merge", "fine-tune", "eval_2"] {
            assert!(check_kind(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn file_hash_depends_on_every_chunk_and_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut data = vec![7u8; CHUNK + 10];
        std::fs::write(&p, &data).unwrap();
        let a = hash_file(&p).unwrap();
        data[CHUNK + 3] = 8;
        std::fs::write(&p, &data).unwrap();
        assert_ne!(hash_file(&p).unwrap(), a);
        std::fs::write(&p, b"").unwrap();
        let empty = hash_file(&p).unwrap();
        std::fs::write(&p, b"\0").unwrap();
        assert_ne!(hash_file(&p).unwrap(), empty);
    }
}
