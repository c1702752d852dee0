# shellcheck shell=bash
# Build environment for mmerge; sourced by scripts/test, .ci/run, ...
# (`source scripts/env.sh` in an interactive shell works too).
#
# Sets and exports:
#   MMERGE_CACHE      cache root shared by all clones (default ~/.cache/mmerge)
#   CARGO_TARGET_DIR  ${CARGO_TARGET_DIR:-$MMERGE_CACHE/target}: build outputs
#                     shared by all clones
#   LIBTORCH          absolute path of the libtorch install (the same string in
#                     every clone, so the shared target dir does not rebuild
#                     torch-sys when you switch clones)
# and installs libtorch on first use (scripts/setup-libtorch).
#
# Knobs:
#   MMERGE_TORCH_VARIANT=lean|cuda  which install to use; default: the one
#                     <repo>/.libtorch points at, else lean
#   MMERGE_NO_SETUP=1 never install; fail if libtorch is missing

_mmerge_env() {
    local repo torch_version=2.13.0 variant dir flag="" v meta
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1

    export MMERGE_CACHE=${MMERGE_CACHE:-$HOME/.cache/mmerge}
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MMERGE_CACHE/target}

    variant=${MMERGE_TORCH_VARIANT:-}
    if [[ -z $variant ]]; then
        case $(readlink "$repo/.libtorch" 2>/dev/null || true) in
            *-cuda/view) variant=cuda ;;
            *) variant=lean ;;
        esac
    fi
    case $variant in
        lean) dir=$MMERGE_CACHE/libtorch-$torch_version ;;
        cuda)
            dir=$MMERGE_CACHE/libtorch-$torch_version-cuda
            flag=" --cuda"
            ;;
        *)
            echo "env.sh: error: MMERGE_TORCH_VARIANT must be 'lean' or 'cuda', not '$variant'" >&2
            return 1
            ;;
    esac

    if [[ ! -f $dir/.complete ]]; then
        if [[ ${MMERGE_NO_SETUP:-0} == 1 ]]; then
            echo "env.sh: error: libtorch is not set up (no complete install in $dir): run scripts/setup-libtorch$flag" >&2
            return 1
        fi
        # shellcheck disable=SC2086
        "$repo/scripts/setup-libtorch"$flag || {
            echo "env.sh: error: libtorch is not set up: scripts/setup-libtorch$flag failed (see above)" >&2
            return 1
        }
    fi

    meta=$(compgen -G "$dir/site/torch-*.dist-info/METADATA" | head -n1) || true
    v=""
    [[ -z $meta ]] || v=$(sed -n 's/^Version: *//p' "$meta" | head -n1) || true
    if [[ ${v%%+*} != "$torch_version" ]]; then
        echo "env.sh: error: found torch ${v:-(none)} in $dir, need $torch_version: run scripts/setup-libtorch$flag --force" >&2
        return 1
    fi
    if [[ ! -e $dir/view/lib/libtorch_cpu.so ]]; then
        echo "env.sh: error: $dir/view/lib/libtorch_cpu.so is missing: run scripts/setup-libtorch$flag --force" >&2
        return 1
    fi

    # Keep <repo>/.libtorch (used by plain `cargo` via .cargo/config.toml) in step.
    if [[ $(readlink "$repo/.libtorch" 2>/dev/null || true) != "$dir/view" ]]; then
        if [[ -e $repo/.libtorch && ! -L $repo/.libtorch ]]; then
            echo "env.sh: warning: $repo/.libtorch is not a symlink; leaving it alone" >&2
        else
            ln -sfn "$dir/view" "$repo/.libtorch" || return 1
        fi
    fi

    export LIBTORCH=$dir/view
    # These would make torch-sys look elsewhere (LIBTORCH_USE_PYTORCH wins over
    # LIBTORCH; `import torch` fails in the lean install anyway).
    unset LIBTORCH_USE_PYTORCH LIBTORCH_INCLUDE LIBTORCH_LIB
    return 0
}

_mmerge_env
