//! `type: email`: sends each message as a multipart (HTML + text) email over SMTP, through a
//! relay (`host`, STARTTLS, implicit TLS or plain, optional auth) or directly to each recipient
//! domain's MX hosts (`use-mx`).
//!
//! Invariant: credentials are only ever sent over TLS unless `tls: none` is chosen explicitly.

mod mx;
mod text;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::api_client;
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, Secret, units};
use crate::message::Message;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Postee's placeholder for the event's application-scope owners.
const OWNER_PLACEHOLDER: &str = "<%application_scope_owner%>";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct EmailConfig {
    /// SMTP relay host (not needed with `use-mx`).
    #[serde(default)]
    host: Option<String>,
    /// SMTP port; default 465 for `tls: tls`, 587 for STARTTLS with auth, else 25.
    #[serde(default, deserialize_with = "units::de_opt_string")]
    port: Option<String>,
    #[serde(default)]
    user: Option<Secret>,
    #[serde(default)]
    password: Option<Secret>,
    /// From address; default `user`.
    #[serde(default)]
    sender: Option<String>,
    /// To addresses; `<%application_scope_owner%>` stands for the event's owners.
    #[serde(default, deserialize_with = "units::de_string_list")]
    recipients: Vec<String>,
    /// HELO/EHLO name; default this machine's host name.
    #[serde(default)]
    client_host_name: Option<String>,
    /// Deliver straight to each recipient domain's MX hosts (no relay, no auth).
    #[serde(default, deserialize_with = "units::de_lenient_bool")]
    use_mx: bool,
    /// `host:port` of the DNS server for MX look-ups; default the system resolver.
    #[serde(default)]
    mx_resolver: Option<String>,
    /// `starttls`, `tls` (implicit, port 465), `opportunistic` or `none`.
    #[serde(default)]
    tls: Option<String>,
    #[serde(
        default = "api_client::yes",
        deserialize_with = "units::de_lenient_bool"
    )]
    tls_verify: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    /// STARTTLS required: no credentials or mail before the upgrade.
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// STARTTLS when the server offers it, plain otherwise (Postee's behaviour).
    Opportunistic,
    /// Never TLS.
    None,
}

/// Everything needed to open a TLS session, whichever host it is for.
#[derive(Clone)]
struct TlsTrust {
    verify: bool,
    roots: Vec<Certificate>,
}

enum Delivery {
    Relay {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        host: String,
        port: u16,
        mode: TlsMode,
        user: Option<String>,
    },
    Mx(Box<mx::Mx>),
}

pub struct Email {
    name: String,
    sender: Mailbox,
    recipients: Vec<String>,
    delivery: Delivery,
    timeout: Duration,
}

pub fn build(config: &ActionConfig, _cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, warnings) = super::settings::<EmailConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    let user = settings
        .user
        .as_ref()
        .map(|u| u.expose().to_string())
        .filter(|u| !u.is_empty());
    let sender_text = settings
        .sender
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| user.clone())
        .ok_or_else(|| located("sender", "required (the From address)".into()))?;
    let sender: Mailbox = sender_text.parse().map_err(|err| {
        located(
            "sender",
            format!("`{sender_text}` is not an address: {err}"),
        )
    })?;
    if settings.recipients.is_empty() {
        return Err(located(
            "recipients",
            "at least one recipient is required".into(),
        ));
    }
    for recipient in &settings.recipients {
        if recipient != OWNER_PLACEHOLDER && recipient.parse::<Mailbox>().is_err() {
            return Err(located(
                "recipients",
                format!("`{recipient}` is not an address"),
            ));
        }
    }
    let port = match &settings.port {
        None => None,
        Some(p) if p.trim().is_empty() => None,
        Some(p) => Some(
            p.trim()
                .parse::<u16>()
                .map_err(|_| located("port", format!("`{p}` is not a port number")))?,
        ),
    };
    let trust = TlsTrust {
        verify: settings.tls_verify,
        roots: read_roots(settings.ca_file.as_deref()).map_err(|why| located("ca-file", why))?,
    };
    let timeout = settings.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let hello = settings.client_host_name.clone().filter(|h| !h.is_empty());
    let delivery = if settings.use_mx {
        let resolver = match settings.mx_resolver.as_deref().filter(|r| !r.is_empty()) {
            None => None,
            Some(text) => Some(parse_resolver(text).map_err(|why| located("mx-resolver", why))?),
        };
        Delivery::Mx(Box::new(mx::Mx::new(
            resolver,
            port.unwrap_or(25),
            trust,
            hello,
            timeout,
        )))
    } else {
        let host = settings
            .host
            .clone()
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| located("host", "required unless `use-mx` is true".into()))?;
        let password = settings.password.clone().filter(|p| !p.is_empty());
        let credentials = match (&user, &password) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            )),
            _ => None,
        };
        let mode = tls_mode(settings.tls.as_deref(), port, credentials.is_some())
            .map_err(|why| located("tls", why))?;
        let port = port.unwrap_or(match mode {
            TlsMode::Implicit => 465,
            TlsMode::StartTls if credentials.is_some() => 587,
            _ => 25,
        });
        let tls = tls(mode, &host, &trust).map_err(|why| located("ca-file", why))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.trim())
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(hello) = &hello {
            builder = builder.hello_name(ClientId::Domain(hello.clone()));
        }
        let auth_user = credentials.as_ref().and(user.clone());
        if let Some(credentials) = credentials {
            builder = builder
                .credentials(credentials)
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Delivery::Relay {
            transport: builder.build(),
            host: host.trim().to_string(),
            port,
            mode,
            user: auth_user,
        }
    };
    Built::new(
        Email {
            name: config.name.clone(),
            sender,
            recipients: settings.recipients,
            delivery,
            timeout,
        },
        warnings,
    )
}

/// The configured mode, or the default: implicit TLS on 465; STARTTLS required when there are
/// credentials (they never travel in clear); otherwise STARTTLS when offered.
fn tls_mode(text: Option<&str>, port: Option<u16>, auth: bool) -> Result<TlsMode, String> {
    match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") if port == Some(465) => Ok(TlsMode::Implicit),
        None | Some("") if auth => Ok(TlsMode::StartTls),
        None | Some("") => Ok(TlsMode::Opportunistic),
        Some("starttls") => Ok(TlsMode::StartTls),
        Some("tls" | "implicit" | "ssl" | "smtps") => Ok(TlsMode::Implicit),
        Some("opportunistic") => Ok(TlsMode::Opportunistic),
        Some("none" | "off" | "plain") => Ok(TlsMode::None),
        Some(other) => Err(format!(
            "`{other}` is not a TLS mode (use starttls, tls, opportunistic or none)"
        )),
    }
}

fn tls(mode: TlsMode, host: &str, trust: &TlsTrust) -> Result<Tls, String> {
    if mode == TlsMode::None {
        return Ok(Tls::None);
    }
    let parameters = trust.parameters(host)?;
    Ok(match mode {
        TlsMode::StartTls => Tls::Required(parameters),
        TlsMode::Implicit => Tls::Wrapper(parameters),
        TlsMode::Opportunistic => Tls::Opportunistic(parameters),
        TlsMode::None => Tls::None,
    })
}

impl TlsTrust {
    fn parameters(&self, host: &str) -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(host.trim_end_matches('.').to_string())
            .dangerous_accept_invalid_certs(!self.verify)
            .dangerous_accept_invalid_hostnames(!self.verify);
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        builder
            .build_rustls()
            .map_err(|err| format!("cannot set up TLS for {host}: {err}"))
    }
}

/// The certificates of a PEM bundle to trust besides the public roots.
fn read_roots(path: Option<&std::path::Path>) -> Result<Vec<Certificate>, String> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read(path)
        .map_err(|err| format!("cannot read CA file {}: {err}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "CA file {} holds no PEM certificate",
            path.display()
        ));
    }
    Certificate::from_pem(&pem)
        .map(|certificate| vec![certificate])
        .map_err(|err| format!("CA file {} is not PEM: {err}", path.display()))
}

fn parse_resolver(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{text}` is not an IP address or address:port"))
}

impl Email {
    /// The recipients for `message`, owners expanded; bad owner addresses are logged and skipped.
    fn recipients(&self, message: &Message) -> Vec<Mailbox> {
        let mut out: Vec<Mailbox> = Vec::new();
        for recipient in &self.recipients {
            let texts: Vec<&str> = if recipient == OWNER_PLACEHOLDER {
                message.owners.iter().map(String::as_str).collect()
            } else {
                vec![recipient.as_str()]
            };
            for text in texts {
                match text.parse::<Mailbox>() {
                    Ok(mailbox) if !out.iter().any(|m| m.email == mailbox.email) => {
                        out.push(mailbox)
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(action = %self.name, recipient = text, error = %err, "Recipient skipped.")
                    }
                }
            }
        }
        out
    }

    /// The complete message (headers and both parts) for `recipients`.
    fn compose(
        &self,
        message: &Message,
        recipients: &[Mailbox],
    ) -> Result<lettre::Message, ActionError> {
        let (text, html) = text::bodies(&message.body);
        let mut builder = lettre::Message::builder()
            .from(self.sender.clone())
            .subject(subject(&message.title))
            .date_now()
            .message_id(Some(message_id(self.sender.email.domain())));
        for recipient in recipients {
            builder = builder.to(recipient.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|err| ActionError::permanent(format!("cannot build the email: {err}")))
    }

    async fn deliver(
        &self,
        email: &lettre::Message,
        to: &[Address],
    ) -> Result<String, ActionError> {
        match &self.delivery {
            Delivery::Relay {
                transport, host, ..
            } => {
                let envelope =
                    lettre::address::Envelope::new(Some(self.sender.email.clone()), to.to_vec())
                        .map_err(|err| ActionError::permanent(format!("bad envelope: {err}")))?;
                transport
                    .send_raw(&envelope, &email.formatted())
                    .await
                    .map_err(|err| smtp_error(&format!("sending through {host}"), &err))?;
                Ok(format!("sent to {} recipient(s) through {host}", to.len()))
            }
            Delivery::Mx(mx) => mx.deliver(&self.sender.email, to, &email.formatted()).await,
        }
    }
}

/// The subject: the title on one line (lettre encodes non-ASCII text per RFC 2047).
fn subject(title: &str) -> String {
    let line: String = title
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        "Hooker alert".to_string()
    } else {
        line
    }
}

/// `<random.time@sender-domain>`: unique, and in the sender's domain as RFC 5322 suggests.
fn message_id(domain: &str) -> String {
    let random: u64 = rand::random();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("<{random:016x}.{millis}@{domain}>")
}

/// Classifies an SMTP failure: 5xx replies are permanent; 4xx, timeouts, network and TLS
/// problems may pass.
fn smtp_error(what: &str, err: &lettre::transport::smtp::Error) -> ActionError {
    let mut message = format!("{what}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    if err.is_permanent() {
        ActionError::permanent(message)
    } else {
        ActionError::retryable(message)
    }
}

#[async_trait]
impl Action for Email {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "email"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let recipients = self.recipients(message);
        if recipients.is_empty() {
            return Err(ActionError::permanent(
                "no recipients: the event names no application-scope owner",
            ));
        }
        let email = self.compose(message, &recipients)?;
        let to: Vec<Address> = recipients.iter().map(|m| m.email.clone()).collect();
        match tokio::time::timeout(self.timeout, self.deliver(&email, &to)).await {
            Ok(result) => result.map(Report::detail),
            Err(_) => Err(ActionError::retryable(format!(
                "timed out after {:?} (the action's timeout)",
                self.timeout
            ))),
        }
    }

    fn preview(&self, message: &Message) -> serde_json::Value {
        let recipients = self.recipients(message);
        let transport = match &self.delivery {
            Delivery::Relay {
                host,
                port,
                mode,
                user,
                ..
            } => serde_json::json!({
                "host": host,
                "port": port,
                "tls": format!("{mode:?}"),
                "auth": user.as_ref().map(|u| format!("{u} / ***")),
            }),
            Delivery::Mx(mx) => mx.describe(),
        };
        let email = self
            .compose(message, &recipients)
            .map(|e| String::from_utf8_lossy(&e.formatted()).into_owned())
            .unwrap_or_else(|err| err.message);
        serde_json::json!({
            "transport": transport,
            "envelope": {
                "from": self.sender.email.to_string(),
                "to": recipients.iter().map(|m| m.email.to_string()).collect::<Vec<_>>(),
            },
            "message": email,
        })
    }
}
