//! Hostile Dockerfiles (root): specs that try to reach the host through
//! heredoc names, COPY/ADD sources, symlinks in the context, .dockerignore
//! negations, mount sources and cache ids, secrets, WORKDIR and COPY
//! destinations through links, a RUN that swaps a mount stub's parent for a
//! link to the host, and archives with hostile members.
//!
//! Each case states its expected outcome (a clear error naming what is
//! wrong, a build, or "contained": either, as long as nothing escapes).
//! Around every case a sentinel proves that nothing outside the store,
//! the context and the requested outputs changed: the `outside/` tree next
//! to the context (which holds a secret and targets for every trick), the
//! context itself, a host path under /tmp that the specs aim at, and the
//! host's `/` listing; the secret must be in no blob of the store.

mod common;

use common::builds::store_with_base;
use common::harness::Needs;
use common::hostile::{in_temp_dirs, run_corpus, Placement};

fn hostile_dockerfiles_never_touch_the_host() {
    let work = tempfile::tempdir().unwrap();
    let store = store_with_base(work.path());
    let fresh = || tempfile::tempdir().unwrap();
    run_corpus(
        &store,
        &Placement {
            work: &fresh,
            ready: &in_temp_dirs,
            rootless: false,
        },
    );
}

tests!(hostile_dockerfiles_never_touch_the_host: Needs::root_and(&["mmdebstrap", "findmnt"]));
