//! `mmerge encode` / `mmerge doctor` are handed to the `mmerge-torch` executable beside
//! `mmerge`, arguments and exit status unchanged; without it, the error names it and the
//! command that builds it. A stand-in script plays `mmerge-torch` here, so these tests need
//! no libtorch (crates/torch-cli/tests/handoff.rs runs the real pair).

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A folder holding a copy of `mmerge` (a copy, not a link: `mmerge` looks beside the file it
/// was started from, with links resolved).
fn lone_mmerge() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("mmerge");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_mmerge"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_mmerge"), &exe).unwrap();
    }
    (dir, exe)
}

/// A stand-in `mmerge-torch` in `dir` that prints each argument on its own line, between
/// `<` and `>`, echoes its standard input and exits with status 7.
fn stand_in(dir: &Path) {
    let path = dir.join("mmerge-torch");
    std::fs::write(
        &path,
        "#!/bin/sh\nfor a in \"$@\"; do printf '<%s>\\n' \"$a\"; done\ncat\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(exe: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn encode_and_doctor_pass_arguments_status_and_stdio_through() {
    let (dir, mmerge) = lone_mmerge();
    stand_in(dir.path());
    let o = run(
        &mmerge,
        &["encode", "--model", "a b", "--help", "--", "-x", ""],
        "from stdin\n",
    );
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "<encode>\n<--model>\n<a b>\n<--help>\n<-->\n<-x>\n<>\nfrom stdin\n"
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    let o = run(&mmerge, &["doctor"], "");
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "<doctor>\n");
}

#[test]
fn a_missing_torch_executable_is_named_with_the_command_that_builds_it() {
    let (dir, mmerge) = lone_mmerge();
    for cmd in ["encode", "doctor"] {
        let o = run(&mmerge, &[cmd, "--help"], "");
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        let missing = dir.path().join("mmerge-torch");
        assert!(
            err.contains(&format!(
                "`mmerge {cmd}` runs on libtorch, in the executable mmerge-torch, which is not \
                 beside mmerge ({} is missing)",
                missing.display()
            )),
            "{err}"
        );
        assert!(err.contains("cargo build"), "{err}");
        assert!(err.contains("-p mmerge-torch"), "{err}");
    }
}

#[test]
fn the_help_lists_the_libtorch_commands() {
    let o = Command::new(env!("CARGO_BIN_EXE_mmerge"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    // Whitespace collapsed: clap pads the names to the longest command's width.
    let lines: Vec<String> = help
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for line in [
        "encode Embeddings of sentences or images from a Hugging Face BERT, DINOv2 or ViT model",
        "doctor Check libtorch: version, CUDA, threads, and a small computation",
        "statistics Collect the statistics data-dependent merges read (Gram matrices, Fisher, \
         expert activations) of a trained model on a suite (runs in mmerge-torch)",
    ] {
        assert!(lines.iter().any(|l| l == line), "{line}\n{help}");
    }
}
