//! Talking to registries. So far: finding and storing credentials the way
//! Docker, Podman and skopeo do; pull and push come next (issue 4).

pub mod auth;
