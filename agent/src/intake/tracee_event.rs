//! Tracee's protobuf `Event` (from `StreamEvents`) as the JSON Tracee itself prints for it: the
//! snake_case `v1beta1.Event` shape (`timestamp` an RFC 3339 string, `workload`, `data[]` keyed by
//! value kind, `threat`, `detected_from`), so routes and templates (`lib/tracee.rego`) treat an
//! event the same whether it came over gRPC, a webhook or a file.
//!
//! Detections are not special here: they are events with a `threat` (current Tracee sends their
//! real signature event id, e.g. 6018; older releases sent 0).

use base64::Engine;
use hooker_grpc::tracee::v1beta1 as pb;
use pb::event_value::Value as Kind;
use serde_json::{Map, Value, json};

/// The JSON object for one streamed event.
pub fn to_json(event: &pb::Event) -> Value {
    let mut out = Map::new();
    // Tracee writes a missing timestamp as the string "null".
    out.insert(
        "timestamp".into(),
        event
            .timestamp
            .as_ref()
            .map_or_else(|| Value::from("null"), timestamp),
    );
    out.insert("id".into(), event.id.into());
    out.insert("name".into(), event.name.clone().into());
    if let Some(policies) = &event.policies {
        out.insert("policies".into(), json!({ "matched": policies.matched }));
    }
    if let Some(workload) = &event.workload {
        out.insert("workload".into(), self::workload(workload));
    }
    if !event.data.is_empty() {
        out.insert("data".into(), data(&event.data));
    }
    if let Some(threat) = &event.threat {
        out.insert("threat".into(), self::threat(threat));
    }
    if let Some(detected_from) = &event.detected_from {
        out.insert("detected_from".into(), self::detected_from(detected_from));
    }
    Value::Object(out)
}

/// Go's `time.RFC3339Nano` in UTC: fraction digits without trailing zeros, none when zero.
/// Nanoseconds outside 0..1e9 carry into the seconds, as Go's `time.Unix` does.
fn timestamp(ts: &prost_types::Timestamp) -> Value {
    let seconds = ts
        .seconds
        .saturating_add(i64::from(ts.nanos).div_euclid(1_000_000_000));
    let nanos = u32::try_from(i64::from(ts.nanos).rem_euclid(1_000_000_000)).unwrap_or(0);
    let Some(time) = chrono::DateTime::from_timestamp(seconds, nanos) else {
        return Value::Null;
    };
    let mut text = time.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Value::String(text)
}

fn workload(workload: &pb::Workload) -> Value {
    let mut out = Map::new();
    if let Some(p) = &workload.process {
        out.insert("process".into(), process(p));
    }
    if let Some(c) = &workload.container {
        out.insert("container".into(), container(c));
    }
    if let Some(k) = &workload.k8s {
        out.insert("k8s".into(), k8s(k));
    }
    Value::Object(out)
}

fn process(process: &pb::Process) -> Value {
    let mut out = Map::new();
    if let Some(executable) = &process.executable {
        out.insert("executable".into(), json!({ "path": executable.path }));
    }
    insert_some(&mut out, "unique_id", process.unique_id);
    insert_some(&mut out, "host_pid", process.host_pid);
    insert_some(&mut out, "pid", process.pid);
    if let Some(id) = process.real_user.as_ref().and_then(|u| u.id) {
        out.insert("real_user".into(), json!({ "id": id }));
    }
    if let Some(t) = &process.thread {
        out.insert("thread".into(), thread(t));
    }
    if !process.ancestors.is_empty() {
        out.insert(
            "ancestors".into(),
            process.ancestors.iter().map(self::process).collect(),
        );
    }
    Value::Object(out)
}

fn thread(thread: &pb::Thread) -> Value {
    let mut out = Map::new();
    if let Some(start) = &thread.start_time {
        out.insert("start_time".into(), timestamp(start));
    }
    if !thread.name.is_empty() {
        out.insert("name".into(), thread.name.clone().into());
    }
    insert_some(&mut out, "unique_id", thread.unique_id);
    insert_some(&mut out, "host_tid", thread.host_tid);
    insert_some(&mut out, "tid", thread.tid);
    if !thread.syscall.is_empty() {
        out.insert("syscall".into(), thread.syscall.clone().into());
    }
    if thread.compat {
        out.insert("compat".into(), true.into());
    }
    if let Some(stack) = &thread.user_stack_trace {
        let addresses: Vec<Value> = stack
            .addresses
            .iter()
            .map(|a| json!({ "address": a.address, "symbol": a.symbol }))
            .collect();
        out.insert("user_stack_trace".into(), json!({ "addresses": addresses }));
    }
    Value::Object(out)
}

fn container(container: &pb::Container) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), container.id.clone().into());
    out.insert("name".into(), container.name.clone().into());
    if let Some(image) = &container.image {
        let mut img = Map::new();
        img.insert("id".into(), image.id.clone().into());
        if !image.repo_digests.is_empty() {
            img.insert("repo_digests".into(), image.repo_digests.clone().into());
        }
        img.insert("name".into(), image.name.clone().into());
        out.insert("image".into(), Value::Object(img));
    }
    out.insert("started".into(), container.started.into());
    Value::Object(out)
}

fn k8s(k8s: &pb::K8s) -> Value {
    let mut out = Map::new();
    if let Some(pod) = &k8s.pod {
        let mut p = Map::new();
        p.insert("name".into(), pod.name.clone().into());
        p.insert("uid".into(), pod.uid.clone().into());
        if !pod.labels.is_empty() {
            p.insert("labels".into(), json!(pod.labels));
        }
        out.insert("pod".into(), Value::Object(p));
    }
    if let Some(namespace) = &k8s.namespace {
        out.insert("namespace".into(), json!({ "name": namespace.name }));
    }
    Value::Object(out)
}

fn threat(threat: &pb::Threat) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), threat.description.clone().into());
    if let Some(mitre) = &threat.mitre {
        let mut m = Map::new();
        if let Some(tactic) = &mitre.tactic {
            m.insert("tactic".into(), json!({ "name": tactic.name }));
        }
        if let Some(technique) = &mitre.technique {
            m.insert(
                "technique".into(),
                json!({ "id": technique.id, "name": technique.name }),
            );
        }
        out.insert("mitre".into(), Value::Object(m));
    }
    out.insert("severity".into(), threat.severity.into());
    out.insert("name".into(), threat.name.clone().into());
    if !threat.properties.is_empty() {
        out.insert("properties".into(), json!(threat.properties));
    }
    Value::Object(out)
}

fn detected_from(from: &pb::DetectedFrom) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), from.id.into());
    out.insert("name".into(), from.name.clone().into());
    if !from.data.is_empty() {
        out.insert("data".into(), data(&from.data));
    }
    if let Some(parent) = &from.parent {
        out.insert("parent".into(), detected_from(parent));
    }
    Value::Object(out)
}

fn data(values: &[pb::EventValue]) -> Value {
    values.iter().map(event_value).collect()
}

/// `{"name": …, "<kind>": <value>}`; 64-bit integers as strings (protobuf JSON), an unknown or
/// unset kind as `"value": null`.
fn event_value(value: &pb::EventValue) -> Value {
    let (kind, rendered) = match &value.value {
        Some(kind) => render_kind(kind),
        None => ("value", Value::Null),
    };
    let mut out = Map::new();
    out.insert("name".into(), value.name.clone().into());
    out.insert(kind.into(), rendered);
    Value::Object(out)
}

fn render_kind(kind: &Kind) -> (&'static str, Value) {
    match kind {
        Kind::Int32(n) => ("int32", (*n).into()),
        Kind::Int64(n) => ("int64", n.to_string().into()),
        Kind::UInt32(n) => ("u_int32", (*n).into()),
        Kind::UInt64(n) => ("u_int64", n.to_string().into()),
        Kind::Str(s) => ("str", s.clone().into()),
        Kind::Bytes(b) => (
            "bytes",
            base64::engine::general_purpose::STANDARD.encode(b).into(),
        ),
        Kind::Bool(b) => ("bool", (*b).into()),
        Kind::StrArray(a) => ("str_array", array(a.value.iter().cloned().map(Value::from))),
        Kind::Int32Array(a) => ("int32_array", array(a.value.iter().map(|n| (*n).into()))),
        Kind::UInt64Array(a) => (
            "u_int64_array",
            array(a.value.iter().map(|n| n.to_string().into())),
        ),
        Kind::Sockaddr(s) => ("sockaddr", sockaddr(s)),
        Kind::Credentials(c) => ("credentials", credentials(c)),
        Kind::Timespec(t) => (
            "timespec",
            t.value
                .map_or(Value::Null, |v| json!({ "value": go_float(v) })),
        ),
        Kind::HookedSyscalls(v) => ("hooked_syscalls", serialized(v)),
        Kind::HookedSeqOps(v) => ("hooked_seq_ops", serialized(v)),
        Kind::Ipv4(v) => ("ipv4", serialized(v)),
        Kind::Ipv6(v) => ("ipv6", serialized(v)),
        Kind::Tcp(v) => ("tcp", serialized(v)),
        Kind::Udp(v) => ("udp", serialized(v)),
        Kind::Icmp(v) => ("icmp", serialized(v)),
        Kind::Icmpv6(v) => ("icmpv6", serialized(v)),
        Kind::Dns(v) => ("dns", serialized(v)),
        Kind::DnsQuestions(v) => ("dns_questions", serialized(v)),
        Kind::DnsResponses(v) => ("dns_responses", serialized(v)),
        Kind::PacketMetadata(v) => ("packet_metadata", serialized(v)),
        Kind::Http(v) => ("http", serialized(v)),
        Kind::HttpRequest(v) => ("http_request", serialized(v)),
        Kind::HttpResponse(v) => ("http_response", serialized(v)),
        Kind::Struct(s) => ("struct", structure(s)),
        Kind::Pointer(p) => ("pointer", p.to_string().into()),
    }
}

/// `{"value": [...]}`, or `{}` when empty (protobuf JSON leaves empty repeated fields out).
fn array(items: impl Iterator<Item = Value>) -> Value {
    let items: Vec<Value> = items.collect();
    if items.is_empty() {
        json!({})
    } else {
        json!({ "value": items })
    }
}

fn serialized(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` writes it and a JSON parser reads it
/// back: integral values below 1e6 are integers, the rest floats; NaN and infinities (which Tracee
/// writes as invalid JSON) are null.
fn go_float(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 1e6 {
        // Lossless: integral and well inside i64.
        return Value::from(value as i64);
    }
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// Tracee writes an all-zero sockaddr as `{}`, and the family by name (its number, as a string,
/// when the enum does not know it).
fn sockaddr(s: &pb::SockAddr) -> Value {
    if *s == pb::SockAddr::default() {
        return json!({});
    }
    let family = pb::SaFamilyT::try_from(s.sa_family)
        .map(|f| Value::from(f.as_str_name()))
        .unwrap_or_else(|_| Value::from(s.sa_family.to_string()));
    let mut out = Map::new();
    out.insert("sa_family".into(), family);
    for (key, text) in [
        ("sun_path", &s.sun_path),
        ("sin_addr", &s.sin_addr),
        ("sin6_addr", &s.sin6_addr),
    ] {
        if !text.is_empty() {
            out.insert(key.into(), text.clone().into());
        }
    }
    for (key, n) in [
        ("sin_port", s.sin_port),
        ("sin6_port", s.sin6_port),
        ("sin6_flowinfo", s.sin6_flowinfo),
        ("sin6_scopeid", s.sin6_scopeid),
    ] {
        if n != 0 {
            out.insert(key.into(), n.into());
        }
    }
    Value::Object(out)
}

fn credentials(c: &pb::Credentials) -> Value {
    let mut out = Map::new();
    for (key, id) in [
        ("uid", c.uid),
        ("gid", c.gid),
        ("suid", c.suid),
        ("sgid", c.sgid),
        ("euid", c.euid),
        ("egid", c.egid),
        ("fsuid", c.fsuid),
        ("fsgid", c.fsgid),
        ("user_namespace", c.user_namespace),
        ("secure_bits", c.secure_bits),
    ] {
        insert_some(&mut out, key, id);
    }
    for (key, caps) in [
        ("cap_inheritable", &c.cap_inheritable),
        ("cap_permitted", &c.cap_permitted),
        ("cap_effective", &c.cap_effective),
        ("cap_bounding", &c.cap_bounding),
        ("cap_ambient", &c.cap_ambient),
    ] {
        // Tracee writes capabilities as their numbers, not their enum names.
        if !caps.is_empty() {
            out.insert(key.into(), caps.clone().into());
        }
    }
    Value::Object(out)
}

fn structure(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), struct_value(v)))
            .collect(),
    )
}

fn struct_value(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind as K;
    match &value.kind {
        None | Some(K::NullValue(_)) => Value::Null,
        Some(K::NumberValue(n)) => go_float(*n),
        Some(K::StringValue(s)) => s.clone().into(),
        Some(K::BoolValue(b)) => (*b).into(),
        Some(K::StructValue(s)) => structure(s),
        Some(K::ListValue(list)) => list.values.iter().map(struct_value).collect(),
    }
}

fn insert_some(out: &mut Map<String, Value>, key: &str, value: Option<u32>) {
    if let Some(value) = value {
        out.insert(key.into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection() -> pb::Event {
        pb::Event {
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_657_290_245,
                nanos: 20_855_990,
            }),
            id: 0,
            name: "anti_debugging".into(),
            policies: Some(pb::Policies {
                matched: vec!["default".into()],
            }),
            workload: Some(pb::Workload {
                process: Some(pb::Process {
                    executable: Some(pb::Executable {
                        path: "/usr/bin/strace".into(),
                    }),
                    unique_id: None,
                    host_pid: Some(4242),
                    pid: Some(7),
                    real_user: Some(pb::User { id: Some(0) }),
                    thread: Some(pb::Thread {
                        start_time: None,
                        name: "strace".into(),
                        unique_id: None,
                        host_tid: Some(4242),
                        tid: Some(7),
                        syscall: "ptrace".into(),
                        compat: false,
                        user_stack_trace: None,
                    }),
                    ancestors: vec![],
                }),
                container: Some(pb::Container {
                    id: "ae95a9".into(),
                    name: "app".into(),
                    image: Some(pb::ContainerImage {
                        id: String::new(),
                        repo_digests: vec![],
                        name: "docker.io/library/ubuntu:latest".into(),
                    }),
                    started: true,
                }),
                k8s: Some(pb::K8s {
                    pod: Some(pb::Pod {
                        name: "app-75ff449bcd-hfwnz".into(),
                        uid: "u1".into(),
                        labels: Default::default(),
                    }),
                    namespace: Some(pb::K8sNamespace {
                        name: "default".into(),
                    }),
                }),
            }),
            data: vec![
                pb::EventValue {
                    name: "request".into(),
                    value: Some(Kind::Int64(9_876_543_210)),
                },
                pb::EventValue {
                    name: "argv".into(),
                    value: Some(Kind::StrArray(pb::StringArray {
                        value: vec!["strace".into(), "ls".into()],
                    })),
                },
                pb::EventValue {
                    name: "unknown".into(),
                    value: None,
                },
            ],
            threat: Some(pb::Threat {
                description: "A process used anti-debugging techniques".into(),
                mitre: Some(pb::Mitre {
                    tactic: Some(pb::MitreTactic {
                        name: "defense-evasion".into(),
                    }),
                    technique: Some(pb::MitreTechnique {
                        id: "T1622".into(),
                        name: "Debugger Evasion".into(),
                    }),
                }),
                severity: 1,
                name: "Anti-Debugging detected".into(),
                properties: [("signatureID".to_string(), "TRC-102".to_string())]
                    .into_iter()
                    .collect(),
            }),
            detected_from: Some(pb::DetectedFrom {
                id: 102,
                name: "ptrace".into(),
                data: vec![],
                parent: None,
            }),
        }
    }

    #[test]
    fn detection_renders_as_tracee_prints_it() {
        let expected = json!({
            "timestamp": "2022-07-08T14:24:05.02085599Z",
            "id": 0,
            "name": "anti_debugging",
            "policies": {"matched": ["default"]},
            "workload": {
                "process": {
                    "executable": {"path": "/usr/bin/strace"},
                    "host_pid": 4242,
                    "pid": 7,
                    "real_user": {"id": 0},
                    "thread": {"name": "strace", "host_tid": 4242, "tid": 7, "syscall": "ptrace"}
                },
                "container": {
                    "id": "ae95a9",
                    "name": "app",
                    "image": {"id": "", "name": "docker.io/library/ubuntu:latest"},
                    "started": true
                },
                "k8s": {
                    "pod": {"name": "app-75ff449bcd-hfwnz", "uid": "u1"},
                    "namespace": {"name": "default"}
                }
            },
            "data": [
                {"name": "request", "int64": "9876543210"},
                {"name": "argv", "str_array": {"value": ["strace", "ls"]}},
                {"name": "unknown", "value": null}
            ],
            "threat": {
                "description": "A process used anti-debugging techniques",
                "mitre": {
                    "tactic": {"name": "defense-evasion"},
                    "technique": {"id": "T1622", "name": "Debugger Evasion"}
                },
                "severity": 1,
                "name": "Anti-Debugging detected",
                "properties": {"signatureID": "TRC-102"}
            },
            "detected_from": {"id": 102, "name": "ptrace"}
        });
        assert_eq!(to_json(&detection()), expected);
    }

    #[test]
    fn timestamps_follow_go_rfc3339nano() {
        let at = |seconds, nanos| timestamp(&prost_types::Timestamp { seconds, nanos });
        assert_eq!(at(0, 0), json!("1970-01-01T00:00:00Z"));
        assert_eq!(at(1, 500_000_000), json!("1970-01-01T00:00:01.5Z"));
        assert_eq!(at(1, 1), json!("1970-01-01T00:00:01.000000001Z"));
    }

    #[test]
    fn value_kinds_use_protobuf_json_names() {
        let render = |kind: Kind| {
            event_value(&pb::EventValue {
                name: "x".into(),
                value: Some(kind),
            })
        };
        assert_eq!(
            render(Kind::UInt64(u64::MAX)),
            json!({"name": "x", "u_int64": "18446744073709551615"})
        );
        assert_eq!(
            render(Kind::Bytes(vec![1, 2, 3])),
            json!({"name": "x", "bytes": "AQID"})
        );
        assert_eq!(
            render(Kind::StrArray(pb::StringArray { value: vec![] })),
            json!({"name": "x", "str_array": {}})
        );
        assert_eq!(
            render(Kind::Sockaddr(pb::SockAddr {
                sa_family: 2,
                sin_addr: "10.0.0.1".into(),
                sin_port: 443,
                ..Default::default()
            })),
            json!({"name": "x", "sockaddr": {"sa_family": "AF_INET", "sin_addr": "10.0.0.1", "sin_port": 443}})
        );
        assert_eq!(
            render(Kind::DnsQuestions(pb::DnsQuestions {
                questions: vec![pb::DnsQueryData {
                    query: "www.zip.net".into(),
                    query_type: "AAAA".into(),
                    query_class: "IN".into(),
                }],
            })),
            json!({"name": "x", "dns_questions": {"questions": [{"query": "www.zip.net", "query_type": "AAAA", "query_class": "IN"}]}})
        );
        assert_eq!(
            render(Kind::PacketMetadata(pb::PacketMetadata {
                src_ip: "10.0.0.1".into(),
                dst_port: 53,
                ..Default::default()
            })),
            json!({"name": "x", "packet_metadata": {"src_ip": "10.0.0.1", "dst_port": 53}})
        );
    }

    fn render(kind: Kind) -> Value {
        event_value(&pb::EventValue {
            name: "x".into(),
            value: Some(kind),
        })
    }

    /// Tracee's `writeCredentials` writes capabilities as integers.
    #[test]
    fn credential_capabilities_stay_integers() {
        let rendered = render(Kind::Credentials(pb::Credentials {
            uid: Some(0),
            cap_effective: vec![0, 21, 40],
            cap_ambient: vec![77],
            ..Default::default()
        }));
        assert_eq!(
            rendered,
            json!({"name": "x", "credentials": {"uid": 0, "cap_effective": [0, 21, 40], "cap_ambient": [77]}})
        );
    }

    /// Network types go through protojson: enums by name, 64-bit integers as strings.
    #[test]
    fn network_types_follow_protojson() {
        assert_eq!(
            render(Kind::PacketMetadata(pb::PacketMetadata {
                src_ip: "10.0.0.1".into(),
                direction: pb::PacketDirection::Egress as i32,
                ..Default::default()
            })),
            json!({"name": "x", "packet_metadata": {"src_ip": "10.0.0.1", "direction": "EGRESS"}})
        );
        assert_eq!(
            render(Kind::PacketMetadata(pb::PacketMetadata {
                direction: 7,
                ..Default::default()
            })),
            json!({"name": "x", "packet_metadata": {"direction": 7}})
        );
        let headers: std::collections::BTreeMap<String, pb::HttpHeader> = [(
            "Accept".to_string(),
            pb::HttpHeader {
                header: vec!["*/*".into()],
            },
        )]
        .into_iter()
        .collect();
        assert_eq!(
            render(Kind::Http(pb::Http {
                method: "GET".into(),
                status_code: 200,
                headers: headers.clone(),
                content_length: 5_000_000_000,
                ..Default::default()
            })),
            json!({"name": "x", "http": {"method": "GET", "status_code": 200, "headers": {"Accept": {"header": ["*/*"]}}, "content_length": "5000000000"}})
        );
        assert_eq!(
            render(Kind::HttpRequest(pb::HttpRequest {
                content_length: 12,
                ..Default::default()
            })),
            json!({"name": "x", "http_request": {"content_length": "12"}})
        );
        assert_eq!(
            render(Kind::HttpResponse(pb::HttpResponse {
                content_length: -1,
                headers,
                ..Default::default()
            })),
            json!({"name": "x", "http_response": {"headers": {"Accept": {"header": ["*/*"]}}, "content_length": "-1"}})
        );
        // A set but empty message is `{}`; an unset one is left out.
        assert_eq!(
            render(Kind::DnsResponses(pb::DnsResponses {
                responses: vec![pb::DnsResponseData {
                    dns_query_data: Some(pb::DnsQueryData::default()),
                    dns_answer: vec![pb::DnsAnswer {
                        r#type: "A".into(),
                        ttl: 60,
                        answer: "1.2.3.4".into(),
                    }],
                }],
            })),
            json!({"name": "x", "dns_responses": {"responses": [{"dns_query_data": {}, "dns_answer": [{"type": "A", "ttl": 60, "answer": "1.2.3.4"}]}]}})
        );
    }

    /// DNS answers keep the SOA, SRV, MX, OPT and URI payloads (fields 10-14).
    #[test]
    fn dns_answers_keep_every_record_payload() {
        let record = pb::DnsResourceRecord {
            name: "zip.net".into(),
            r#type: "SOA".into(),
            class: "IN".into(),
            ttl: 300,
            soa: Some(pb::Dnssoa {
                mname: "ns1.zip.net".into(),
                rname: "admin.zip.net".into(),
                serial: 2024,
                refresh: 3600,
                retry: 600,
                expire: 86400,
                minimum: 60,
            }),
            srv: Some(pb::Dnssrv {
                priority: 10,
                weight: 5,
                port: 443,
                name: "svc.zip.net".into(),
            }),
            mx: Some(pb::Dnsmx {
                preference: 20,
                name: "mx.zip.net".into(),
            }),
            opt: vec![pb::Dnsopt {
                code: "Cookie".into(),
                data: "abcd".into(),
            }],
            uri: Some(pb::Dnsuri {
                priority: 1,
                weight: 2,
                target: "https://zip.net/".into(),
            }),
            ..Default::default()
        };
        let rendered = render(Kind::Dns(pb::Dns {
            id: 7,
            qr: 1,
            answers: vec![record],
            ..Default::default()
        }));
        assert_eq!(
            rendered,
            json!({"name": "x", "dns": {"id": 7, "qr": 1, "answers": [{
                "name": "zip.net", "type": "SOA", "class": "IN", "ttl": 300,
                "soa": {"mname": "ns1.zip.net", "rname": "admin.zip.net", "serial": 2024, "refresh": 3600, "retry": 600, "expire": 86400, "minimum": 60},
                "srv": {"priority": 10, "weight": 5, "port": 443, "name": "svc.zip.net"},
                "mx": {"Preference": 20, "name": "mx.zip.net"},
                "opt": [{"code": "Cookie", "data": "abcd"}],
                "uri": {"priority": 1, "weight": 2, "target": "https://zip.net/"}
            }]}})
        );
    }

    /// Tracee's `writeSockAddr`, `writeTimespec` and `writeTimestamp` for empty values.
    #[test]
    fn empty_values_render_as_tracee_writes_them() {
        assert_eq!(
            render(Kind::Sockaddr(pb::SockAddr::default())),
            json!({"name": "x", "sockaddr": {}})
        );
        assert_eq!(
            render(Kind::Sockaddr(pb::SockAddr {
                sa_family: 17,
                ..Default::default()
            })),
            json!({"name": "x", "sockaddr": {"sa_family": "17"}})
        );
        assert_eq!(
            render(Kind::Timespec(pb::Timespec { value: None })),
            json!({"name": "x", "timespec": null})
        );
        assert_eq!(
            render(Kind::Timespec(pb::Timespec { value: Some(2.0) })),
            json!({"name": "x", "timespec": {"value": 2}})
        );
        assert_eq!(
            render(Kind::Timespec(pb::Timespec { value: Some(1.5) })),
            json!({"name": "x", "timespec": {"value": 1.5}})
        );
        let mut event = detection();
        event.timestamp = None;
        assert_eq!(to_json(&event)["timestamp"], json!("null"));
        let at = |seconds, nanos| timestamp(&prost_types::Timestamp { seconds, nanos });
        assert_eq!(at(1, -500_000_000), json!("1970-01-01T00:00:00.5Z"));
    }
}
