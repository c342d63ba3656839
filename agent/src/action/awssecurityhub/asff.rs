//! A message as AWS Security Finding Format findings. Pure: no clock or environment reads here.
//!
//! Three sources, in order: a body that already holds ASFF (`{"Findings": [...]}` from Trivy's
//! `asff.tpl`, Postee's contract) is passed through whole; a Trivy report or a trivy-operator
//! VulnerabilityReport becomes one finding per vulnerability; anything else becomes one generic
//! finding whose `Id` is stable per route and finding, so repeats update it.

use serde_json::{Value, json};

use crate::action::alert::{self, Severity};
use crate::message::Message;

/// Field limits from the ASFF reference.
const TITLE_LIMIT: usize = 256;
const DESCRIPTION_LIMIT: usize = 1024;
const ID_LIMIT: usize = 512;
const OTHER_VALUE_LIMIT: usize = 1024;

/// Who the findings come from, and when they are made.
pub struct Origin<'a> {
    pub account_id: Option<&'a str>,
    pub product_arn: Option<&'a str>,
    pub region: &'a str,
    /// RFC 3339 time for `CreatedAt`/`UpdatedAt` of findings Hooker makes.
    pub now: &'a str,
}

/// Why a message cannot become findings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AsffError {
    #[error(
        "account-id is not set (nor AWS_ACCOUNT_ID): it is needed to build findings from a message that is not ASFF"
    )]
    NoAccount,
    #[error("the message's Findings list is empty")]
    Empty,
}

/// The findings for one message.
pub fn findings(message: &Message, origin: &Origin<'_>) -> Result<Vec<Value>, AsffError> {
    if let Some(given) = given_findings(message) {
        if given.is_empty() {
            return Err(AsffError::Empty);
        }
        return Ok(given
            .into_iter()
            .map(|finding| fill_origin(finding, origin))
            .collect());
    }
    let account = origin.account_id.ok_or(AsffError::NoAccount)?;
    let product_arn = origin.product_arn.map(str::to_string).unwrap_or_else(|| {
        format!(
            "arn:aws:securityhub:{}:{account}:product/{account}/default",
            origin.region
        )
    });
    let made = Made {
        account,
        product_arn: &product_arn,
        origin,
    };
    let event = message
        .event
        .get("operatorObject")
        .unwrap_or(&message.event);
    let vulnerabilities = trivy_findings(event, &made);
    if !vulnerabilities.is_empty() {
        return Ok(vulnerabilities);
    }
    Ok(vec![generic_finding(message, event, &made)])
}

struct Made<'a> {
    account: &'a str,
    product_arn: &'a str,
    origin: &'a Origin<'a>,
}

/// `{"Findings": [...]}`, a bare list of findings, or one finding, as the body.
fn given_findings(message: &Message) -> Option<Vec<Value>> {
    let is_finding = |v: &Value| v.get("SchemaVersion").is_some() && v.get("Id").is_some();
    match message.body_json()? {
        Value::Object(mut map) if map.contains_key("Findings") => match map.remove("Findings") {
            Some(Value::Array(items)) => Some(items),
            _ => Some(Vec::new()),
        },
        Value::Array(items) if !items.is_empty() && items.iter().all(is_finding) => Some(items),
        single if is_finding(&single) => Some(vec![single]),
        _ => None,
    }
}

/// Fills `AwsAccountId` and `ProductArn` when a given finding lacks them.
fn fill_origin(mut finding: Value, origin: &Origin<'_>) -> Value {
    let blank = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
    if let Some(account) = origin.account_id
        && blank(finding.get("AwsAccountId"))
    {
        finding["AwsAccountId"] = account.into();
    }
    if let Some(arn) = origin.product_arn
        && blank(finding.get("ProductArn"))
    {
        finding["ProductArn"] = arn.into();
    }
    finding
}

fn label(severity: Option<Severity>) -> &'static str {
    match severity.unwrap_or(Severity::Medium) {
        Severity::Critical => "CRITICAL",
        Severity::High => "HIGH",
        Severity::Medium => "MEDIUM",
        Severity::Low => "LOW",
        Severity::Info => "INFORMATIONAL",
    }
}

/// One finding per vulnerability of a Trivy report or a trivy-operator VulnerabilityReport,
/// shaped like Trivy's own `asff.tpl` output.
fn trivy_findings(event: &Value, made: &Made<'_>) -> Vec<Value> {
    let mut out = Vec::new();
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if let Some(results) = event.get("Results").and_then(Value::as_array) {
        let artifact = text(event, "ArtifactName");
        for result in results {
            let target = text(result, "Target");
            for vuln in result
                .get("Vulnerabilities")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(vulnerability_finding(
                    made,
                    &Vulnerability {
                        artifact: &artifact,
                        target: &target,
                        id: &text(vuln, "VulnerabilityID"),
                        package: &text(vuln, "PkgName"),
                        installed: &text(vuln, "InstalledVersion"),
                        fixed: &text(vuln, "FixedVersion"),
                        title: &text(vuln, "Title"),
                        description: &text(vuln, "Description"),
                        link: &text(vuln, "PrimaryURL"),
                        severity: vuln.get("Severity").and_then(Severity::parse),
                    },
                ));
            }
        }
    } else if let Some(report) = event.get("report")
        && let Some(vulns) = report.get("vulnerabilities").and_then(Value::as_array)
    {
        let artifact = report.get("artifact").cloned().unwrap_or_default();
        let registry = report
            .pointer("/registry/server")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let repository = text(&artifact, "repository");
        let tag = text(&artifact, "tag");
        let image = match (registry, tag.is_empty()) {
            (Some(server), false) => format!("{server}/{repository}:{tag}"),
            (Some(server), true) => format!("{server}/{repository}"),
            (None, false) => format!("{repository}:{tag}"),
            (None, true) => repository.clone(),
        };
        let target = format!(
            "{}/{}",
            event
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            event
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        for vuln in vulns {
            out.push(vulnerability_finding(
                made,
                &Vulnerability {
                    artifact: &image,
                    target: &target,
                    id: &text(vuln, "vulnerabilityID"),
                    package: &text(vuln, "resource"),
                    installed: &text(vuln, "installedVersion"),
                    fixed: &text(vuln, "fixedVersion"),
                    title: &text(vuln, "title"),
                    description: &text(vuln, "description"),
                    link: &text(vuln, "primaryLink"),
                    severity: vuln.get("severity").and_then(Severity::parse),
                },
            ));
        }
    }
    out
}

struct Vulnerability<'a> {
    artifact: &'a str,
    target: &'a str,
    id: &'a str,
    package: &'a str,
    installed: &'a str,
    fixed: &'a str,
    title: &'a str,
    description: &'a str,
    link: &'a str,
    severity: Option<Severity>,
}

fn vulnerability_finding(made: &Made<'_>, vuln: &Vulnerability<'_>) -> Value {
    let resource = if vuln.artifact.is_empty() {
        vuln.target
    } else {
        vuln.artifact
    };
    let title = format!(
        "Trivy found a vulnerability to {} in container {resource}",
        vuln.id
    );
    let description = if vuln.description.is_empty() {
        title.clone()
    } else {
        vuln.description.to_string()
    };
    let id = if vuln.target.is_empty() || vuln.target == resource {
        format!("{resource}/{}/{}", vuln.package, vuln.id)
    } else {
        format!("{resource}/{}/{}/{}", vuln.target, vuln.package, vuln.id)
    };
    let mut other = serde_json::Map::new();
    for (key, value) in [
        ("CVE ID", vuln.id),
        ("CVE Title", vuln.title),
        ("PkgName", vuln.package),
        ("Installed Package", vuln.installed),
        ("Patched Package", vuln.fixed),
        ("Target", vuln.target),
    ] {
        if !value.is_empty() {
            other.insert(key.into(), chars(value, OTHER_VALUE_LIMIT).into());
        }
    }
    let mut finding = json!({
        "SchemaVersion": "2018-10-08",
        "Id": chars(&id, ID_LIMIT),
        "ProductArn": made.product_arn,
        "GeneratorId": format!("Trivy/{}", vuln.id),
        "AwsAccountId": made.account,
        "Types": ["Software and Configuration Checks/Vulnerabilities/CVE"],
        "CreatedAt": made.origin.now,
        "UpdatedAt": made.origin.now,
        "Severity": {"Label": label(vuln.severity)},
        "Title": chars(&title, TITLE_LIMIT),
        "Description": chars(&description, DESCRIPTION_LIMIT),
        "ProductFields": {"Product Name": "Trivy"},
        "Resources": [{
            "Type": "Container",
            "Id": chars(resource, ID_LIMIT),
            "Partition": "aws",
            "Region": made.origin.region,
            "Details": {
                "Container": {"ImageName": resource},
                "Other": other,
            },
        }],
        "RecordState": "ACTIVE",
    });
    if vuln.link.starts_with("http") {
        finding["Remediation"] = json!({"Recommendation": {
            "Text": "More information on this vulnerability is provided in the hyperlink",
            "Url": vuln.link,
        }});
    }
    finding
}

/// One finding for any other message: title, body, severity and a stable `Id`.
fn generic_finding(message: &Message, event: &Value, made: &Made<'_>) -> Value {
    let pointer = |paths: &[&str]| {
        paths
            .iter()
            .find_map(|p| event.pointer(p).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let tactic = pointer(&["/metadata/Properties/Category", "/threat/mitre/tactic/name"]);
    let is_tracee = event.get("eventName").is_some()
        || event.get("SigMetadata").is_some()
        || event.get("threat").is_some();
    let kind = match tactic.as_deref().and_then(ttp_category) {
        Some(category) => format!("TTPs/{category}"),
        None if is_tracee => "Unusual Behaviors/Process".to_string(),
        None => "Software and Configuration Checks".to_string(),
    };
    let container = pointer(&[
        "/containerImage",
        "/container/image",
        "/workload/container/image/name",
        "/Context/containerImage",
    ]);
    let resource = container
        .clone()
        .or_else(|| {
            pointer(&["/podName", "/kubernetes/podName", "/workload/k8s/pod/name"])
                .map(|pod| format!("pod/{pod}"))
        })
        .or_else(|| pointer(&["/hostName", "/Context/hostName", "/SigMetadata/Hostname"]))
        .unwrap_or_else(|| format!("hooker/{}", message.route));
    let title = if message.title.trim().is_empty() {
        format!("Hooker alert from route {}", message.route)
    } else {
        message.title.clone()
    };
    let description = if message.body.trim().is_empty() {
        title.clone()
    } else {
        message.body.clone()
    };
    let mut details = serde_json::Map::new();
    details.insert("Hooker Route".into(), message.route.clone().into());
    for (key, paths) in [
        (
            "Signature",
            &["/metadata/Properties/signatureID", "/SigMetadata/ID"][..],
        ),
        (
            "Pod",
            &["/podName", "/kubernetes/podName", "/workload/k8s/pod/name"][..],
        ),
        (
            "Namespace",
            &[
                "/podNamespace",
                "/kubernetes/podNamespace",
                "/workload/k8s/namespace/name",
            ][..],
        ),
        (
            "Process",
            &["/processName", "/workload/process/thread/name"][..],
        ),
    ] {
        if let Some(value) = pointer(paths) {
            details.insert(key.into(), chars(&value, OTHER_VALUE_LIMIT).into());
        }
    }
    let mut resource_details = json!({"Other": details});
    if let Some(image) = &container {
        resource_details["Container"] = json!({"ImageName": image});
    }
    let mut finding = json!({
        "SchemaVersion": "2018-10-08",
        "Id": chars(&alert::finding_key(message), ID_LIMIT),
        "ProductArn": made.product_arn,
        "GeneratorId": chars(&format!("hooker/{}", message.route), ID_LIMIT),
        "AwsAccountId": made.account,
        "Types": [kind],
        "CreatedAt": made.origin.now,
        "UpdatedAt": made.origin.now,
        "Severity": {"Label": label(alert::severity(message))},
        "Title": chars(&title, TITLE_LIMIT),
        "Description": chars(&description, DESCRIPTION_LIMIT),
        "ProductFields": {"Product Name": "Hooker"},
        "Resources": [{
            "Type": if container.is_some() { "Container" } else { "Other" },
            "Id": chars(&resource, ID_LIMIT),
            "Partition": "aws",
            "Region": made.origin.region,
            "Details": resource_details,
        }],
        "RecordState": "ACTIVE",
    });
    if let Some(url) = message.url.as_deref().filter(|u| u.starts_with("http")) {
        finding["SourceUrl"] = url.into();
    }
    finding
}

/// Tracee's MITRE tactic (`defense-evasion`) as an ASFF TTPs category (`Defense Evasion`).
fn ttp_category(tactic: &str) -> Option<&'static str> {
    let key = tactic.to_ascii_lowercase().replace([' ', '_'], "-");
    Some(match key.as_str() {
        "initial-access" => "Initial Access",
        "execution" => "Execution",
        "persistence" => "Persistence",
        "privilege-escalation" => "Privilege Escalation",
        "defense-evasion" => "Defense Evasion",
        "credential-access" => "Credential Access",
        "discovery" => "Discovery",
        "lateral-movement" => "Lateral Movement",
        "collection" => "Collection",
        "command-and-control" => "Command and Control",
        _ => return None,
    })
}

/// At most `limit` characters (ASFF limits count characters).
fn chars(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;

    use crate::fixtures::text as fixture;

    fn message(body: &str, event: Value) -> Message {
        Message {
            route: "r".into(),
            event_id: "e".into(),
            title: "Title".into(),
            body: body.into(),
            body_pending: false,
            url: None,
            fields: BTreeMap::new(),
            owners: vec![],
            event: Arc::new(event.into()),
        }
    }

    const ORIGIN: Origin<'static> = Origin {
        account_id: Some("123456789012"),
        product_arn: None,
        region: "eu-west-1",
        now: "2024-01-01T00:00:00Z",
    };

    #[test]
    fn trivy_asff_bodies_pass_through_whole() {
        let body = fixture("postee/trivy-aws-securityhub-findings.json");
        let given: Value = serde_json::from_str(&body).unwrap();
        let made = findings(&message(&body, json!({})), &ORIGIN).unwrap();
        assert_eq!(Value::Array(made), given["Findings"]);
    }

    #[test]
    fn trivy_reports_become_one_finding_per_vulnerability() {
        let report: Value =
            serde_json::from_str(&fixture("trivy/trivy-image-alpine-310.json")).unwrap();
        let made = findings(&message("text", report.clone()), &ORIGIN).unwrap();
        let count: usize = report["Results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Vulnerabilities"].as_array().map_or(0, Vec::len))
            .sum();
        assert_eq!(made.len(), count);
        let first = &made[0];
        assert_eq!(
            first["ProductArn"],
            "arn:aws:securityhub:eu-west-1:123456789012:product/123456789012/default"
        );
        assert_eq!(first["AwsAccountId"], "123456789012");
        assert_eq!(first["Resources"][0]["Type"], "Container");
        assert!(
            first["GeneratorId"]
                .as_str()
                .unwrap()
                .starts_with("Trivy/CVE-")
        );
        let ids: std::collections::HashSet<_> = made.iter().map(|f| f["Id"].clone()).collect();
        assert_eq!(ids.len(), made.len(), "ids are unique");
    }

    #[test]
    fn other_events_become_one_generic_finding_with_a_stable_id() {
        let event: Value = serde_json::from_str(&fixture(
            "tracee/v0.12-era-signature-dropped-executable-TRC-1022.json",
        ))
        .unwrap();
        let made = findings(&message("<p>dropped</p>", event.clone()), &ORIGIN).unwrap();
        assert_eq!(made.len(), 1);
        let finding = &made[0];
        assert_eq!(finding["Types"], json!(["TTPs/Defense Evasion"]));
        assert_eq!(finding["Severity"]["Label"], "MEDIUM");
        assert_eq!(
            finding["Resources"][0]["Id"],
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(finding["Description"], "<p>dropped</p>");
        let again = findings(&message("<p>dropped</p>", event), &ORIGIN).unwrap();
        assert_eq!(again[0]["Id"], finding["Id"]);
        let no_account = Origin {
            account_id: None,
            ..ORIGIN
        };
        assert_eq!(
            findings(&message("x", json!({"a": 1})), &no_account),
            Err(AsffError::NoAccount)
        );
    }
}
