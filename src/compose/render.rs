//! Files rendered from the project's `templates/` (minijinja): the
//! `/etc/kairos-release` of a cell and the k3s/k0s services.

use std::path::Path;

use minijinja::{context, Environment};

use super::ComposeError;
use crate::project::flavor::InitSystem;
use crate::project::{ArtifactId, Project, Variant};

/// Renders `templates/<name>` with `ctx`.
fn render(project_root: &Path, name: &str, ctx: minijinja::Value) -> Result<String, ComposeError> {
    let path = project_root.join("templates").join(name);
    let text = std::fs::read_to_string(&path).map_err(|source| crate::store::StoreError::Io {
        path: path.clone(),
        source,
    })?;
    let fail = |source| ComposeError::Template {
        template: path.clone(),
        source: Box::new(source),
    };
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template(name, &text).map_err(fail)?;
    let mut out = env
        .get_template(name)
        .map_err(fail)?
        .render(ctx)
        .map_err(fail)?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// `/etc/kairos-release` of the image `id` names (core has no k8s keys).
pub fn kairos_release(project: &Project, id: &ArtifactId) -> Result<String, ComposeError> {
    let variant = id.variant;
    let flavor = &project.flavors[&id.flavor];
    let image = id.image_ref(&project.config.registry);
    let (repo, label) = image.rsplit_once(':').unwrap_or((image.as_str(), ""));
    let (k8s, k8s_version) = match (variant, &id.k8s) {
        (Variant::Standard, Some((distro, version))) => (distro.as_str(), version.as_str()),
        _ => ("", ""),
    };
    render(
        &project.root,
        "kairos-release.j2",
        context! {
            name => project.config.name,
            version => id.version,
            flavor => id.flavor,
            flavor_release => id.flavor_release,
            family => format!("{:?}", flavor.family).to_lowercase(),
            variant => match variant { Variant::Core => "core", Variant::Standard => "standard" },
            model => id.model,
            arch => id.arch.to_string(),
            registry => project.config.registry,
            image_repo => repo,
            image_label => label,
            k8s => k8s,
            k8s_version => k8s_version,
        },
    )
}

/// A k3s or k0s service (`role`: server, agent, controller, worker) for
/// the image's init system.
pub fn service(
    project_root: &Path,
    init: InitSystem,
    distro: &str,
    name: &str,
    role: &str,
    notify: bool,
) -> Result<String, ComposeError> {
    let command = format!("/usr/bin/{distro}");
    let description = format!("{distro} {role} (Kubernetes), started by Kairos' provider");
    match init {
        InitSystem::Systemd => render(
            project_root,
            "services/systemd.service.j2",
            context! {
                description => description,
                exec => format!("{command} {role}"),
                notify => notify,
                env_file => format!("/etc/systemd/system/{name}.service.env"),
            },
        ),
        InitSystem::Openrc => render(
            project_root,
            "services/openrc.j2",
            context! {
                description => description,
                name => name,
                command => command,
                args => role,
                env_file => format!("/etc/rancher/{distro}/{name}.env"),
            },
        ),
    }
}
