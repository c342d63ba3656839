//! Direct delivery (`use-mx`): recipients grouped by domain, each domain's MX hosts tried in
//! preference order (the domain itself when it has no MX record, RFC 5321 §5.1), STARTTLS when
//! offered, no authentication.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{TlsMode, TlsTrust, smtp_error, tls};
use crate::action::ActionError;

pub struct Mx {
    /// The DNS server to ask; `None` = the system's (`/etc/resolv.conf`).
    nameserver: Option<SocketAddr>,
    port: u16,
    trust: TlsTrust,
    hello: Option<String>,
    timeout: Duration,
    /// Made on first use, so building the action reads no system files.
    resolver: tokio::sync::OnceCell<TokioResolver>,
}

impl Mx {
    pub(super) fn new(
        nameserver: Option<SocketAddr>,
        port: u16,
        trust: TlsTrust,
        hello: Option<String>,
        timeout: Duration,
    ) -> Mx {
        Mx {
            nameserver,
            port,
            trust,
            hello,
            timeout,
            resolver: tokio::sync::OnceCell::new(),
        }
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "use_mx": true,
            "resolver": self.nameserver.map_or("system".to_string(), |n| n.to_string()),
            "port": self.port,
            "tls": "opportunistic",
        })
    }

    async fn resolver(&self) -> Result<&TokioResolver, ActionError> {
        self.resolver
            .get_or_try_init(|| async {
                let mut options = ResolverOpts::default();
                options.timeout = self.timeout.min(Duration::from_secs(5));
                let builder = match self.nameserver {
                    Some(address) => {
                        let mut config = ResolverConfig::new();
                        config.add_name_server(NameServerConfig::new(address, Protocol::Udp));
                        TokioResolver::builder_with_config(
                            config,
                            TokioConnectionProvider::default(),
                        )
                    }
                    None => TokioResolver::builder_tokio().map_err(|err| {
                        ActionError::permanent(format!("cannot read the system DNS config: {err}"))
                    })?,
                };
                Ok(builder.with_options(options).build())
            })
            .await
    }

    /// Sends `raw` to every recipient, domain by domain. Fails on the first domain that cannot
    /// be reached; a retry then sends again to the domains before it.
    pub async fn deliver(
        &self,
        from: &Address,
        to: &[Address],
        raw: &[u8],
    ) -> Result<String, ActionError> {
        let mut by_domain: BTreeMap<String, Vec<Address>> = BTreeMap::new();
        for address in to {
            by_domain
                .entry(address.domain().to_ascii_lowercase())
                .or_default()
                .push(address.clone());
        }
        let mut done = Vec::new();
        for (domain, recipients) in &by_domain {
            let host = self.deliver_domain(domain, from, recipients, raw).await?;
            done.push(format!("{domain} via {host}"));
        }
        Ok(format!("delivered directly: {}", done.join(", ")))
    }

    async fn deliver_domain(
        &self,
        domain: &str,
        from: &Address,
        to: &[Address],
        raw: &[u8],
    ) -> Result<String, ActionError> {
        let exchanges = self.exchanges(domain).await?;
        let envelope = lettre::address::Envelope::new(Some(from.clone()), to.to_vec())
            .map_err(|err| ActionError::permanent(format!("bad envelope: {err}")))?;
        let mut last = ActionError::retryable(format!("no mail server of {domain} answered"));
        for exchange in exchanges {
            let addresses = match self.addresses(&exchange).await {
                Ok(addresses) => addresses,
                Err(err) => {
                    last = err;
                    continue;
                }
            };
            for ip in addresses {
                match self.try_host(&exchange, ip, &envelope, raw).await {
                    Ok(()) => return Ok(exchange),
                    Err(err) if err.kind == crate::action::ErrorKind::Permanent => return Err(err),
                    Err(err) => last = err,
                }
            }
        }
        Err(last)
    }

    /// MX hosts of `domain` by preference; the domain itself when it has none.
    async fn exchanges(&self, domain: &str) -> Result<Vec<String>, ActionError> {
        let resolver = self.resolver().await?;
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut records: Vec<(u16, String)> = lookup
                    .iter()
                    .map(|mx| (mx.preference(), mx.exchange().to_utf8()))
                    .collect();
                records.sort();
                // A "null MX" (RFC 7505): the domain accepts no mail.
                if records
                    .iter()
                    .any(|(_, host)| host == "." || host.is_empty())
                {
                    return Err(ActionError::permanent(format!(
                        "{domain} accepts no mail (null MX)"
                    )));
                }
                Ok(records.into_iter().map(|(_, host)| host).collect())
            }
            Err(err) if err.is_no_records_found() => Ok(vec![fqdn]),
            Err(err) => Err(ActionError::retryable(format!(
                "MX look-up for {domain} failed: {err}"
            ))),
        }
    }

    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, ActionError> {
        let resolver = self.resolver().await?;
        let lookup = resolver.lookup_ip(host).await.map_err(|err| {
            ActionError::retryable(format!("address look-up for {host} failed: {err}"))
        })?;
        Ok(lookup.iter().collect())
    }

    async fn try_host(
        &self,
        exchange: &str,
        ip: IpAddr,
        envelope: &lettre::address::Envelope,
        raw: &[u8],
    ) -> Result<(), ActionError> {
        let name = exchange.trim_end_matches('.');
        let tls = tls(TlsMode::Opportunistic, name, &self.trust).map_err(ActionError::permanent)?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(ip.to_string())
            .port(self.port)
            .tls(tls)
            .timeout(Some(self.timeout));
        if let Some(hello) = &self.hello {
            builder = builder.hello_name(ClientId::Domain(hello.clone()));
        }
        builder
            .build()
            .send_raw(envelope, raw)
            .await
            .map(drop)
            .map_err(|err| smtp_error(&format!("delivering to {name} ({ip})"), &err))
    }
}
