//! One authenticated, retrying HTTP session with one repository of one
//! registry.
//!
//! `oci-client` does the authentication handshake (the `WWW-Authenticate`
//! challenge, the token request with the right scope, Basic fallback); the
//! requests themselves go through our own `reqwest` client because pull
//! and push need what `oci-client` does not expose: the `Retry-After`
//! header of a 429/503, ranged resumption of a cut blob, resumable chunked
//! uploads and byte-level progress.
//!
//! Invariants:
//! * Plain HTTP is used only for loopback registries and those the user
//!   listed as insecure; everything else is HTTPS with verified certificates.
//! * A 401 re-runs the handshake once (the token may have expired during a
//!   long push) before it becomes [`RegistryError::Unauthorized`]; tasks
//!   sharing the session refresh the token once, not once each.
//! * Secrets are never put in an error or a log line.

use std::time::{Duration, SystemTime};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use tokio::sync::Mutex;

use super::auth::Credential;
use super::retry::{is_retryable_status, parse_retry_after, RetryPolicy};
use super::RegistryError;

const USER_AGENT: &str = concat!("kbuild/", env!("CARGO_PKG_VERSION"));

/// How to reach registries; shared by every session of one command.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// Registries (`host` or `host:port`) reached over plain HTTP.
    pub insecure: Vec<String>,
    pub retry: RetryPolicy,
    /// Connect timeout; reads time out after four times as long without a byte.
    pub timeout: Option<Duration>,
}

impl TransportOptions {
    /// Plain HTTP for loopback hosts and the listed registries.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = host_of(registry);
        matches!(host, "localhost" | "[::1]")
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
            || self
                .insecure
                .iter()
                .any(|entry| entry == registry || entry == host)
    }
}

fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.split_inclusive(']').next().unwrap_or(registry);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Docker Hub's API lives on a host other than its name.
fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

/// The authorization header in use and its generation, bumped on refresh.
#[derive(Default)]
struct AuthState {
    generation: u64,
    header: Option<Option<HeaderValue>>,
}

pub struct Session {
    pub registry: String,
    pub repository: String,
    /// `scheme://host/v2/<repository>/`
    base: Url,
    http: reqwest::Client,
    oci: oci_client::Client,
    reference: Reference,
    credential: RegistryAuth,
    operation: RegistryOperation,
    auth: Mutex<AuthState>,
    pub policy: RetryPolicy,
}

impl Session {
    pub fn new(
        registry: &str,
        repository: &str,
        credential: Option<Credential>,
        operation: RegistryOperation,
        options: &TransportOptions,
    ) -> Result<Session, RegistryError> {
        // rustls is built without a default crypto provider (aws-lc would
        // need cmake and a C++ toolchain): install ring's, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let insecure = options.is_insecure(registry);
        let scheme = if insecure { "http" } else { "https" };
        let base = Url::parse(&format!(
            "{scheme}://{}/v2/{repository}/",
            api_host(registry)
        ))
        .map_err(|e| RegistryError::Protocol {
            registry: registry.to_string(),
            what: "registry address".into(),
            reason: e.to_string(),
        })?;
        let connect = options.timeout.unwrap_or(Duration::from_secs(30));
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(connect)
            .read_timeout(connect * 4)
            .https_only(!insecure)
            .build()
            .map_err(|source| RegistryError::Http {
                registry: registry.to_string(),
                what: "HTTP client".into(),
                error: source,
            })?;
        let oci = oci_client::Client::new(ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(connect),
            read_timeout: Some(connect * 4),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        });
        let credential = match credential {
            None => RegistryAuth::Anonymous,
            Some(Credential::Basic { username, password }) => {
                RegistryAuth::Basic(username, password)
            }
            Some(Credential::IdentityToken(_)) => {
                return Err(RegistryError::Unauthorized {
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                    detail: "the stored credential is an identity token, which kbuild cannot \
                             exchange yet; run `kbuild login` with a username and password"
                        .into(),
                })
            }
        };
        Ok(Session {
            registry: registry.to_string(),
            repository: repository.to_string(),
            base,
            http,
            oci,
            reference: Reference::with_tag(registry.into(), repository.into(), "latest".into()),
            credential,
            operation,
            auth: Mutex::new(AuthState::default()),
            policy: options.retry.clone(),
        })
    }

    /// `blobs/<digest>`, `manifests/<ref>`, `blobs/uploads/` under the repository.
    pub fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("registry paths are relative URLs")
    }

    /// Resolves a `Location` header (absolute or relative) of a response.
    pub fn location(&self, response: &Response, what: &str) -> Result<Url, RegistryError> {
        let value = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.protocol(what, "the response has no Location header"))?;
        response
            .url()
            .join(value)
            .map_err(|e| self.protocol(what, &format!("bad Location \"{value}\": {e}")))
    }

    pub fn protocol(&self, what: &str, reason: &str) -> RegistryError {
        RegistryError::Protocol {
            registry: self.registry.clone(),
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }

    /// An unexpected status as an error, with the registry's message.
    pub async fn status_error(&self, what: &str, response: Response) -> RegistryError {
        let status = response.status().as_u16();
        let body = capped_text(response).await;
        let detail = registry_message(&body);
        match status {
            404 => RegistryError::NotFound {
                registry: self.registry.clone(),
                what: what.to_string(),
            },
            _ => RegistryError::Status {
                registry: self.registry.clone(),
                what: what.to_string(),
                status,
                detail,
            },
        }
    }

    /// Sends a request built by `build` (called again for every attempt),
    /// retrying transient failures and re-authenticating once on 401.
    /// Returns any other response, whatever its status. `on_retry` hears
    /// about each pause.
    pub async fn send(
        &self,
        what: &str,
        method: Method,
        url: &Url,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
        on_retry: &(dyn Fn(u32, String) + Sync),
    ) -> Result<Response, RegistryError> {
        let mut reauthenticated = false;
        let mut retry = 0;
        loop {
            let (generation, header) = self.authorization().await?;
            let mut request = build(self.http.request(method.clone(), url.clone()));
            // Credentials go only to the registry itself, never to another
            // host an upload Location names.
            let header = header.filter(|_| self.same_origin(url));
            if let Some(value) = &header {
                request = request.header(AUTHORIZATION, value.clone());
            }
            let pause = match request.send().await {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    if reauthenticated {
                        let body = capped_text(response).await;
                        return Err(self.unauthorized(header.is_some(), &body));
                    }
                    reauthenticated = true;
                    self.refresh(generation).await;
                    continue;
                }
                Ok(response) if is_retryable_status(response.status().as_u16()) => {
                    let asked = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let status = response.status();
                    if retry + 1 >= self.policy.attempts {
                        return Err(self.status_error(what, response).await);
                    }
                    let reason = match asked {
                        Some(d) => format!("HTTP {status}, Retry-After {}s", d.as_secs_f32()),
                        None => format!("HTTP {status}"),
                    };
                    (asked, reason)
                }
                Ok(response) => return Ok(response),
                Err(source) => {
                    if retry + 1 >= self.policy.attempts || !is_transient(&source) {
                        return Err(RegistryError::Http {
                            registry: self.registry.clone(),
                            what: what.to_string(),
                            error: source,
                        });
                    }
                    (None, error_chain(&source))
                }
            };
            retry += 1;
            on_retry(retry, pause.1);
            tokio::time::sleep(self.policy.delay(retry, pause.0)).await;
        }
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// A request without a body that must answer `expected`.
    pub async fn expect(
        &self,
        what: &str,
        method: Method,
        url: &Url,
        expected: StatusCode,
    ) -> Result<Response, RegistryError> {
        let response = self
            .send(
                what,
                method,
                url,
                |r| r.header(reqwest::header::CONTENT_LENGTH, 0),
                &|_, _| {},
            )
            .await?;
        if response.status() == expected {
            Ok(response)
        } else {
            Err(self.status_error(what, response).await)
        }
    }

    /// The current authorization header, running the handshake the first time.
    async fn authorization(&self) -> Result<(u64, Option<HeaderValue>), RegistryError> {
        let mut state = self.auth.lock().await;
        if let Some(header) = &state.header {
            return Ok((state.generation, header.clone()));
        }
        let header = self.handshake().await?;
        state.header = Some(header.clone());
        Ok((state.generation, header))
    }

    /// Drops the header that got a 401, unless another task already did.
    async fn refresh(&self, generation: u64) {
        let mut state = self.auth.lock().await;
        if state.generation == generation {
            state.generation += 1;
            state.header = None;
        }
    }

    async fn handshake(&self) -> Result<Option<HeaderValue>, RegistryError> {
        let mut retry = 0;
        loop {
            match self
                .oci
                .auth(&self.reference, &self.credential, self.operation)
                .await
            {
                Ok(Some(token)) => {
                    return secret_header(&format!("Bearer {token}"))
                        .map(Some)
                        .ok_or_else(|| {
                            self.protocol(
                                "authentication",
                                "the token service sent an unusable token",
                            )
                        })
                }
                Ok(None) => {
                    return Ok(match &self.credential {
                        RegistryAuth::Basic(user, password) => secret_header(&format!(
                            "Basic {}",
                            super::auth::base64_encode(format!("{user}:{password}").as_bytes())
                        )),
                        _ => None,
                    })
                }
                Err(OciDistributionError::AuthenticationFailure(body)) => {
                    return Err(self
                        .unauthorized(!matches!(self.credential, RegistryAuth::Anonymous), &body))
                }
                Err(OciDistributionError::RequestError(source))
                    if is_transient(&source) && retry + 1 < self.policy.attempts =>
                {
                    retry += 1;
                    tokio::time::sleep(self.policy.delay(retry, None)).await;
                }
                Err(OciDistributionError::RequestError(source)) => {
                    return Err(RegistryError::Http {
                        registry: self.registry.clone(),
                        what: "API check (GET /v2/)".into(),
                        error: source,
                    })
                }
                Err(other) => {
                    return Err(RegistryError::Unauthorized {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                        detail: other.to_string(),
                    })
                }
            }
        }
    }

    fn unauthorized(&self, had_credentials: bool, body: &str) -> RegistryError {
        let message = registry_message(body);
        let hint = if had_credentials {
            "the registry rejected the stored credentials (check them with `kbuild login`)"
        } else {
            "no credentials are stored for this registry; run `kbuild login`"
        };
        let detail = if message.is_empty() {
            format!("401 Unauthorized: {hint}")
        } else {
            format!("401 Unauthorized ({message}): {hint}")
        };
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            detail,
        }
    }
}

fn secret_header(value: &str) -> Option<HeaderValue> {
    let mut header = HeaderValue::from_str(value).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// The start of an error body (registries' messages are small; a hostile
/// one may not be).
async fn capped_text(mut response: Response) -> String {
    const LIMIT: usize = 64 << 10;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= LIMIT {
            body.truncate(LIMIT);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Connection-level failures worth another try: refused or reset
/// connections, timeouts, bodies cut short.
pub fn is_transient(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
}

/// An error with its causes, e.g. "error sending request: connection reset".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// The messages of an OCI error envelope, else the body's first line.
pub fn registry_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Envelope>(body) {
        Ok(envelope) => envelope
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => body
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_only_for_loopback_and_listed() {
        let options = TransportOptions {
            insecure: vec!["registry.lan:5000".into(), "plain.example".into()],
            ..Default::default()
        };
        for r in [
            "localhost:5000",
            "127.0.0.1:41000",
            "127.0.0.53",
            "[::1]:5000",
            "registry.lan:5000",
            "plain.example:443",
        ] {
            assert!(options.is_insecure(r), "{r}");
        }
        for r in ["quay.io", "registry.lan", "docker.io", "127.example.com"] {
            assert!(!options.is_insecure(r), "{r}");
        }
    }

    #[test]
    fn envelope_messages() {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        assert_eq!(
            registry_message(body),
            "UNAUTHORIZED: authentication required"
        );
        assert_eq!(registry_message("plain text\nmore"), "plain text");
    }

    #[test]
    fn credentials_stay_with_the_registry_origin() {
        let session = Session::new(
            "127.0.0.1:5000",
            "a/b",
            None,
            RegistryOperation::Push,
            &TransportOptions::default(),
        )
        .unwrap();
        let same = Url::parse("http://127.0.0.1:5000/v2/a/b/blobs/uploads/1?_state=x").unwrap();
        assert!(session.same_origin(&same));
        for other in [
            "http://127.0.0.2:5000/v2/a/b/blobs/uploads/1",
            "https://127.0.0.1:5000/v2/a/b/blobs/uploads/1",
            "http://127.0.0.1:5001/v2/a/b/blobs/uploads/1",
            "http://storage.example/blob",
        ] {
            assert!(!session.same_origin(&Url::parse(other).unwrap()), "{other}");
        }
    }

    #[test]
    fn docker_hub_api_host() {
        let session = Session::new(
            "docker.io",
            "library/debian",
            None,
            RegistryOperation::Pull,
            &TransportOptions::default(),
        )
        .unwrap();
        assert_eq!(
            session.url("manifests/bookworm").as_str(),
            "https://registry-1.docker.io/v2/library/debian/manifests/bookworm"
        );
    }
}
