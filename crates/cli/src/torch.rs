//! The commands that run on libtorch (`encode`, `doctor`, later `train` and `eval`) live in a
//! second executable, `mmerge-torch` (crates/torch-cli), so that `mmerge` itself links no
//! libtorch: loading it cost every command 0.7 s and 116 MB before it did anything. `mmerge`
//! lists those commands in its help and hands them off: it finds `mmerge-torch` beside its own
//! executable and runs it with the command and its arguments unchanged (on Unix it replaces
//! itself with it, so the exit status, signals and terminal are that command's own).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// The file name of the executable that runs the libtorch commands.
pub const EXECUTABLE: &str = "mmerge-torch";

/// A libtorch command's arguments, passed through as they are, `--help` included.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Everything after the command name (`mmerge encode --help` shows the options).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Where `mmerge-torch` must be: beside the running `mmerge` (symlinks resolved).
pub fn executable() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding the mmerge executable")?;
    Ok(me.with_file_name(format!("{EXECUTABLE}{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs `mmerge-torch <command> <args>`. On Unix this returns only on failure to start it.
pub fn hand_off(command: &str, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let exe = executable()?;
    if !exe.is_file() {
        let profile = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        bail!(
            "`mmerge {command}` runs on libtorch, in the executable {EXECUTABLE}, which is not \
             beside mmerge ({} is missing); build it with `source scripts/env.sh && cargo \
             build{profile} -p {EXECUTABLE}` (scripts/test builds it too)",
            exe.display()
        );
    }
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg(command).args(args.args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = cmd.exec();
        Err(err).with_context(|| format!("running {}", exe.display()))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        Ok(match status.code() {
            Some(0) => std::process::ExitCode::SUCCESS,
            Some(c) => std::process::ExitCode::from(u8::try_from(c).unwrap_or(1)),
            None => std::process::ExitCode::FAILURE,
        })
    }
}
