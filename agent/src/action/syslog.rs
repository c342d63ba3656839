//! `type: syslog`: sends each message as one RFC 5424 syslog message over UDP (RFC 5426), TCP
//! with octet-counted framing (RFC 6587 §3.4.1) or TLS (RFC 5425, rustls), with the rendered
//! body as MSG or, with `format: cef`, an ArcSight CEF record.
//!
//! Header fields are reduced to the printable ASCII RFC 5424 allows, structured-data values and
//! CEF header and extension values are escaped by their own rules, so event text cannot forge a
//! field. A message longer than `size-limit` has its body cut (marked), never dropped. TCP and TLS
//! open one connection per message (alerts are rare; a connection that went stale cannot
//! swallow one). A connection or write failure is retryable; syslog has no acknowledgement, so
//! a written message counts as delivered.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::alert::Severity;
use super::outputs;
use super::{Action, ActionError, BuildContext, Built, Report};
use crate::config::{ActionConfig, Diagnostic, units};
use crate::message::Message;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// rsyslog's default `maxMessageSize`.
const DEFAULT_SIZE_LIMIT: u64 = 8 * 1024;
/// The largest UDP payload over IPv4.
const MAX_UDP: u64 = 65_507;
/// The SD-ID of Hooker's structured data. 32473 is the enterprise number RFC 5612 reserves for
/// documentation and examples: Hooker has none of its own.
const SD_ID: &str = "hooker@32473";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Rfc5424,
    Cef,
}

/// One `type: syslog` block of cfg.yaml.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SyslogConfig {
    /// `host:port` (`[v6]:port`); the port defaults to 514 (udp, tcp) or 6514 (tls).
    address: String,
    protocol: Protocol,
    #[serde(default)]
    format: Format,
    /// Facility name (`local0` … `local7`, `auth`, `authpriv`, `security`, `daemon`, `user`, …)
    /// or number 0–23; default `authpriv`.
    #[serde(default)]
    facility: Option<String>,
    /// HOSTNAME; default the node name.
    #[serde(default)]
    hostname: Option<String>,
    /// APP-NAME; default `hooker`.
    #[serde(default)]
    app_name: Option<String>,
    /// Largest whole syslog message in bytes; the body is cut to fit.
    #[serde(default, deserialize_with = "units::de_byte_size")]
    size_limit: Option<u64>,
    #[serde(default, deserialize_with = "units::de_duration")]
    timeout: Option<Duration>,
    /// TLS: extra PEM CA bundle trusted besides Mozilla's roots.
    #[serde(default)]
    ca_file: Option<PathBuf>,
    /// TLS: the name the certificate must carry; default the address's host.
    #[serde(default)]
    server_name: Option<String>,
    /// CEF header fields.
    #[serde(default)]
    cef_vendor: Option<String>,
    #[serde(default)]
    cef_product: Option<String>,
}

enum Transport {
    Udp,
    Tcp,
    Tls {
        connector: tokio_rustls::TlsConnector,
        server_name: ServerName<'static>,
    },
}

pub struct Syslog {
    name: String,
    host: String,
    port: u16,
    transport: Transport,
    format: Format,
    facility: u8,
    hostname: String,
    app_name: String,
    procid: String,
    size_limit: usize,
    timeout: Duration,
    vendor: String,
    product: String,
}

pub fn build(config: &ActionConfig, cx: &BuildContext) -> Result<Built, Diagnostic> {
    let (settings, warnings) = super::settings::<SyslogConfig>(config)?;
    let located = |key: &str, message: String| {
        Diagnostic::new(config.place(), message)
            .key(key)
            .line(config.item.line_of(key))
    };
    let default_port = match settings.protocol {
        Protocol::Udp | Protocol::Tcp => 514,
        Protocol::Tls => 6514,
    };
    let (host, port) = split_address(&settings.address, default_port)
        .map_err(|why| located("address", format!("`{}` {why}", settings.address.trim())))?;
    let facility = match settings.facility.as_deref() {
        None => 10,
        Some(name) => facility(name).ok_or_else(|| {
            located(
                "facility",
                format!("`{name}` is not a syslog facility (local0 … local7, auth, authpriv, daemon, user, or 0–23)"),
            )
        })?,
    };
    let size_limit = settings.size_limit.unwrap_or(DEFAULT_SIZE_LIMIT);
    if size_limit < 480 {
        return Err(located(
            "size-limit",
            format!(
                "size-limit {size_limit} is too small; every receiver takes 480 bytes, use at least that"
            ),
        ));
    }
    if settings.protocol == Protocol::Udp && size_limit > MAX_UDP {
        return Err(located(
            "size-limit",
            format!("size-limit {size_limit} does not fit in a UDP datagram (at most {MAX_UDP})"),
        ));
    }
    let transport = match settings.protocol {
        Protocol::Udp => Transport::Udp,
        Protocol::Tcp => Transport::Tcp,
        Protocol::Tls => {
            crate::tls::install_crypto_provider();
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            if let Some(path) = &settings.ca_file {
                let bad = |e: String| {
                    located(
                        "ca-file",
                        format!("cannot read CA file {}: {e}", path.display()),
                    )
                };
                let certificates = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                if certificates.is_empty() {
                    return Err(bad("no PEM certificate in it".into()));
                }
                for certificate in certificates {
                    roots.add(certificate).map_err(|e| bad(e.to_string()))?;
                }
            }
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = settings
                .server_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| host.clone());
            let server_name = ServerName::try_from(name.clone()).map_err(|_| {
                located(
                    "server-name",
                    format!("`{name}` is not a DNS name or IP address"),
                )
            })?;
            Transport::Tls {
                connector: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                server_name,
            }
        }
    };
    if settings.protocol != Protocol::Tls
        && (settings.ca_file.is_some() || settings.server_name.is_some())
    {
        return Err(located(
            "protocol",
            "`ca-file` and `server-name` need `protocol: tls`".into(),
        ));
    }
    Built::new(
        Syslog {
            name: config.name.clone(),
            host,
            port,
            transport,
            format: settings.format,
            facility,
            hostname: header_field(settings.hostname.as_deref().unwrap_or(&cx.node_name), 255),
            app_name: header_field(settings.app_name.as_deref().unwrap_or("hooker"), 48),
            procid: std::process::id().to_string(),
            size_limit: usize::try_from(size_limit).unwrap_or(usize::MAX),
            timeout: settings.timeout.unwrap_or(DEFAULT_TIMEOUT),
            vendor: settings.cef_vendor.unwrap_or_else(|| "Hooker".into()),
            product: settings.cef_product.unwrap_or_else(|| "Hooker".into()),
        },
        warnings,
    )
}

/// `host:port`, `[v6]:port`, `host` or `v6` → host and port.
fn split_address(address: &str, default_port: u16) -> Result<(String, u16), &'static str> {
    let address = address.trim();
    if address.is_empty() {
        return Err("is empty: give host:port");
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("has no closing `]`")?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err("has text after `]` that is not :port"),
        }
    } else if address.matches(':').count() == 1 {
        let (host, port) = address.split_once(':').ok_or("is not host:port")?;
        (host, Some(port))
    } else {
        (address, None)
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err("is not host:port");
    }
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or("has a port that is not 1–65535")?,
    };
    Ok((host.to_string(), port))
}

fn facility(name: &str) -> Option<u8> {
    let name = name.trim().to_ascii_lowercase();
    if let Ok(number) = name.parse::<u8>() {
        return (number <= 23).then_some(number);
    }
    let names = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
    ];
    if let Some(position) = names.iter().position(|n| *n == name) {
        return u8::try_from(position).ok();
    }
    let local = name.strip_prefix("local")?.parse::<u8>().ok()?;
    (local <= 7).then_some(16 + local)
}

/// RFC 5424 header field: printable US-ASCII only (other bytes become `_`), at most `max`
/// characters, `-` when empty.
fn header_field(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".into()
    } else {
        cleaned
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped with a backslash (RFC 5424 §6.3.3).
fn sd_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A CEF header field: `\` and `|` escaped; line breaks (not allowed there) become spaces.
fn cef_header(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A CEF extension value: `\` and `=` escaped, line breaks written as `\n` and `\r`.
fn cef_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// syslog severity (RFC 5424 §6.2.1) for Hooker's severities.
fn syslog_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// CEF's 0–10 scale.
fn cef_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 10,
        Severity::High => 8,
        Severity::Medium => 5,
        Severity::Low => 3,
        Severity::Info => 1,
    }
}

/// CEF's Signature ID: the template's `result_signature_id`, else the detection's id (Tracee
/// signature, Falco rule), else the route.
fn signature_id(message: &Message) -> String {
    if let Some(id) = message.field_str("signature_id").filter(|i| !i.is_empty()) {
        return id;
    }
    [
        "/SigMetadata/ID",
        "/metadata/Properties/signatureID",
        "/threat/properties/signatureID",
        "/rule",
    ]
    .iter()
    .find_map(|path| {
        message
            .event
            .pointer(path)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
    .unwrap_or_else(|| message.route.clone())
}

// === impl Syslog ===

impl Syslog {
    /// The whole RFC 5424 message, its body cut (and marked) so it fits `size-limit`.
    fn render(&self, message: &Message) -> String {
        let mut body = message.body.clone();
        for _ in 0..4 {
            let line = self.render_with(message, &body);
            if line.len() <= self.size_limit {
                return line;
            }
            let over = line.len() - self.size_limit;
            // Escaping may double a byte; cut twice the excess plus room for the marker.
            let keep = body.len().saturating_sub(over * 2 + 64);
            let kept = super::api_client::truncate(&message.body, keep);
            body = format!(
                "{kept}… [truncated by hooker: {} of {} bytes]",
                kept.len(),
                message.body.len()
            );
        }
        let line = self.render_with(message, "");
        super::api_client::truncate(&line, self.size_limit).to_string()
    }

    fn render_with(&self, message: &Message, body: &str) -> String {
        let severity = outputs::severity(message);
        let time = outputs::event_time(message);
        let pri = u16::from(self.facility) * 8 + u16::from(syslog_severity(severity));
        let msgid = header_field(&message.route, 32);
        let mut line = format!(
            "<{pri}>1 {} {} {} {} {msgid} ",
            time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.hostname,
            self.app_name,
            self.procid,
        );
        let _ = write!(
            line,
            "[{SD_ID} route=\"{}\" event=\"{}\" severity=\"{}\" source=\"{}\" finding=\"{}\"]",
            sd_value(&message.route),
            sd_value(&message.event_id),
            outputs::severity_word(severity),
            sd_value(&outputs::source(message)),
            sd_value(&super::alert::finding_key(message)),
        );
        match self.format {
            Format::Rfc5424 => {
                if !body.is_empty() {
                    line.push(' ');
                    line.push_str(body);
                }
            }
            Format::Cef => {
                let _ = write!(
                    line,
                    " CEF:0|{}|{}|{}|{}|{}|{}|",
                    cef_header(&self.vendor),
                    cef_header(&self.product),
                    env!("CARGO_PKG_VERSION"),
                    cef_header(&signature_id(message)),
                    cef_header(&message.title),
                    cef_severity(severity),
                );
                let mut extension = vec![
                    ("rt", time.timestamp_millis().to_string()),
                    ("dvchost", self.hostname.clone()),
                    ("externalId", message.event_id.clone()),
                    ("cs1Label", "route".to_string()),
                    ("cs1", message.route.clone()),
                    ("cs2Label", "finding".to_string()),
                    ("cs2", super::alert::finding_key(message)),
                    ("cs3Label", "source".to_string()),
                    ("cs3", outputs::source(message)),
                ];
                if let Some(url) = message.url.as_deref().filter(|u| !u.is_empty()) {
                    extension.push(("request", url.to_string()));
                }
                extension.push(("msg", body.to_string()));
                let pairs: Vec<String> = extension
                    .into_iter()
                    .map(|(key, value)| format!("{key}={}", cef_value(&value)))
                    .collect();
                line.push_str(&pairs.join(" "));
            }
        }
        line
    }

    async fn resolve(&self) -> Result<SocketAddr, ActionError> {
        let mut addresses = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|err| {
                ActionError::retryable(format!("cannot resolve {}: {err}", self.host))
            })?;
        addresses
            .next()
            .ok_or_else(|| ActionError::retryable(format!("{} has no address", self.host)))
    }

    async fn deliver(&self, line: &str) -> Result<(), ActionError> {
        let address = self.resolve().await?;
        let io = |what: &str, err: std::io::Error| {
            ActionError::retryable(format!("{what} {address}: {err}"))
        };
        match &self.transport {
            Transport::Udp => {
                let local: SocketAddr = if address.is_ipv4() {
                    ([0u8; 4], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let socket = tokio::net::UdpSocket::bind(local)
                    .await
                    .map_err(|e| io("cannot open a UDP socket for", e))?;
                socket
                    .send_to(line.as_bytes(), address)
                    .await
                    .map_err(|e| io("cannot send to", e))?;
            }
            Transport::Tcp => {
                let mut stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|e| io("cannot connect to", e))?;
                write_framed(&mut stream, line)
                    .await
                    .map_err(|e| io("cannot write to", e))?;
            }
            Transport::Tls {
                connector,
                server_name,
            } => {
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|e| io("cannot connect to", e))?;
                let mut stream = connector
                    .connect(server_name.clone(), stream)
                    .await
                    .map_err(|e| io("TLS handshake failed with", e))?;
                write_framed(&mut stream, line)
                    .await
                    .map_err(|e| io("cannot write to", e))?;
            }
        }
        Ok(())
    }
}

/// Octet-counted framing (RFC 6587 §3.4.1, RFC 5425 §4.3): `LEN SP MSG`, then a clean close.
async fn write_framed<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    line: &str,
) -> std::io::Result<()> {
    let frame = format!("{} {line}", line.len());
    stream.write_all(frame.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

#[async_trait]
impl Action for Syslog {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "syslog"
    }

    async fn send(&self, message: &Message) -> Result<Report, ActionError> {
        let line = self.render(message);
        match tokio::time::timeout(self.timeout, self.deliver(&line)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ActionError::retryable(format!(
                    "no delivery to {}:{} within {:?}",
                    self.host, self.port, self.timeout
                )));
            }
        }
        Ok(Report::detail(format!("{} bytes", line.len())))
    }

    fn preview(&self, message: &Message) -> Value {
        let protocol = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls { .. } => "tls",
        };
        json!({
            "protocol": protocol,
            "address": format!("{}:{}", self.host, self.port),
            "message": self.render(message),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_with_default_ports() {
        assert_eq!(split_address("siem:1514", 514), Ok(("siem".into(), 1514)));
        assert_eq!(split_address("siem", 6514), Ok(("siem".into(), 6514)));
        assert_eq!(split_address("[::1]:601", 514), Ok(("::1".into(), 601)));
        assert_eq!(split_address("::1", 514), Ok(("::1".into(), 514)));
        assert!(split_address("siem:0", 514).is_err());
        assert!(split_address("siem:x", 514).is_err());
        assert!(split_address("", 514).is_err());
    }

    #[test]
    fn facilities_by_name_and_number() {
        assert_eq!(facility("local0"), Some(16));
        assert_eq!(facility("LOCAL7"), Some(23));
        assert_eq!(facility("authpriv"), Some(10));
        assert_eq!(facility("security"), Some(13));
        assert_eq!(facility("4"), Some(4));
        assert_eq!(facility("24"), None);
        assert_eq!(facility("local8"), None);
    }

    #[test]
    fn escaping_follows_each_format() {
        assert_eq!(sd_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
        assert_eq!(cef_header("a|b\\c\nd=e"), "a\\|b\\\\c d=e");
        assert_eq!(cef_value("a=b\\c\nd|e\r"), "a\\=b\\\\c\\nd|e\\r");
        assert_eq!(header_field("my host\u{e9}", 255), "my_host_");
        assert_eq!(header_field("", 48), "-");
        assert_eq!(header_field(&"x".repeat(40), 32).len(), 32);
    }
}
