//! Intake authentication: bearer tokens on TCP (the Unix socket relies on its file mode), and
//! mutual TLS on HTTPS. A refused request changes nothing.

use hooker_tests::{Agent, Sink, TempDir, webhook_config};

#[tokio::test]
async fn tokens_are_required_on_tcp_and_refusals_change_nothing() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dir = TempDir::new("tokens");
    std::fs::write(dir.join("tokens"), "# accepted tokens\nfrom-file\n")?;
    let agent = Agent::builder(&webhook_config(&sink.url("/")))
        .env("HOOKER_AUTH_TOKEN", "inline-token")
        .env(
            "HOOKER_AUTH_TOKEN_FILE",
            dir.join("tokens").display().to_string(),
        )
        .start()
        .await?;
    let url = format!("{}/", agent.http_url());
    let none = agent.client.post(&url).body(r#"{"n":1}"#).send().await?;
    assert_eq!(none.status().as_u16(), 401);
    assert_eq!(
        none.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let wrong = agent
        .client
        .post(&url)
        .bearer_auth("inline-tokeN")
        .body(r#"{"n":2}"#)
        .send()
        .await?;
    assert_eq!(wrong.status().as_u16(), 401);
    for path in ["/reload", "/admin/dlq/drop"] {
        let response = agent
            .client
            .post(format!("{}{path}", agent.http_url()))
            .body(r#"{"all":true}"#)
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 401, "{path}");
    }
    assert_eq!(
        agent
            .client
            .get(format!("{}/admin/dlq", agent.http_url()))
            .send()
            .await?
            .status()
            .as_u16(),
        401
    );
    let metrics = agent.metrics().await?;
    // The refusal outcomes exist from the start at 0 (for alerts); none has moved.
    assert!(
        metrics
            .lines()
            .filter(|line| line.starts_with("hooker_events_received_total"))
            .all(|line| line.ends_with(" 0")),
        "refused requests are not counted as events:\n{metrics}"
    );
    assert_eq!(
        hooker_tests::metric_value(&metrics, r#"hooker_auth_failures_total{listener="http"}"#),
        5.0
    );
    assert!(sink.requests().is_empty());

    for token in ["inline-token", "from-file"] {
        let ok = agent
            .client
            .post(&url)
            .bearer_auth(token)
            .body(r#"{"n":3}"#)
            .send()
            .await?;
        assert_eq!(ok.status().as_u16(), 200, "{token}");
    }
    // Probes and metrics stay open; the Unix socket needs no token.
    assert_eq!(agent.get("/healthz").await?.0, 200);
    assert_eq!(agent.get("/readyz").await?.0, 200);
    let (code, _, stderr) = agent.cli(&["dlq", "list"]).await?;
    assert_eq!(code, 0, "{stderr}");
    sink.wait_for(2).await?;
    Ok(())
}

#[tokio::test]
async fn https_can_require_client_certificates() -> anyhow::Result<()> {
    let sink = Sink::start().await?;
    let dir = TempDir::new("mtls");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = rcgen::KeyPair::generate()?;
    let client_cert = rcgen::CertificateParams::new(vec!["producer".to_string()])?
        .signed_by(&client_key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;

    let agent = Agent::builder(&webhook_config(&sink.url("/")))
        .env("HOOKER_HTTPS", "127.0.0.1:0")
        .env(
            "HOOKER_TLS_CLIENT_CA",
            dir.join("ca.pem").display().to_string(),
        )
        .start()
        .await?;
    let url = format!("https://{}/", agent.address("https").expect("https"));
    let anonymous = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    assert!(
        anonymous
            .post(&url)
            .body(r#"{"n":1}"#)
            .send()
            .await
            .is_err(),
        "no client certificate, no connection"
    );
    let identity = reqwest::Identity::from_pem(
        format!("{}{}", client_cert.pem(), client_key.serialize_pem()).as_bytes(),
    )?;
    let trusted = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .identity(identity)
        .build()?;
    let response = trusted.post(&url).body(r#"{"n":2}"#).send().await?;
    assert_eq!(response.status().as_u16(), 200);
    let got = sink.wait_for(1).await?;
    assert_eq!(got[0].body_json()["n"], 2);
    Ok(())
}
