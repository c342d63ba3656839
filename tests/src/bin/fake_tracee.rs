//! A stand-in for Tracee's gRPC server (`tracee.v1beta1.TraceeService`, from the same proto as
//! Hooker's subscriber), for the end-to-end tests. It streams real Tracee events: the JSON
//! fixtures converted the way Tracee's gRPC server converts its events (ids translated; detections
//! keep their real signature event id, e.g. 6018, as current Tracee sends it; `threat` from the
//! signature metadata when it has a severity).
//!
//! usage: fake_tracee (--socket PATH | --tcp ADDR) [--policies A,B]
//! With `--policies`, a subscription naming any other policy is refused, as Tracee refuses one
//! naming a policy it does not have.
//! stdout: one JSON line per happening: `listening`, `subscribed` (with the policies asked for).
//! stdin:  `emit TAG FILE...` sends each fixture to every subscriber, with a `test_tag` datum;
//!         `emit-big TAG BYTES` sends one event carrying a string datum of BYTES bytes.
//!         `emit-pb TAG FILE` sends the events in FILE (length-delimited protobuf `Event`s).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hooker_grpc::tracee::v1beta1 as pb;
use pb::event_value::Value as Kind;
use pb::tracee_service_server::{TraceeService, TraceeServiceServer};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

type Subscriber = mpsc::Sender<Result<pb::StreamEventsResponse, Status>>;

/// Each subscriber and the policies it asked for.
type Subscribers = Arc<Mutex<Vec<(Subscriber, Vec<String>)>>>;

#[derive(Clone, Default)]
struct FakeTracee {
    subscribers: Subscribers,
    /// The policies this Tracee has; `None` accepts any.
    known_policies: Option<Vec<String>>,
}

fn say(line: Value) {
    println!("{line}");
}

#[tonic::async_trait]
impl TraceeService for FakeTracee {
    type StreamEventsStream = ReceiverStream<Result<pb::StreamEventsResponse, Status>>;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let policies = request.into_inner().policies;
        if let Some(known) = &self.known_policies
            && let Some(unknown) = policies.iter().find(|p| !known.contains(p))
        {
            say(serde_json::json!({ "event": "refused", "policy": unknown }));
            return Err(Status::unknown(format!("policy {unknown} not found")));
        }
        let (tx, rx) = mpsc::channel(1024);
        if let Ok(mut all) = self.subscribers.lock() {
            all.push((tx, policies.clone()));
        }
        say(serde_json::json!({ "event": "subscribed", "policies": policies }));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_version(
        &self,
        _request: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::GetVersionResponse>, Status> {
        Ok(Response::new(pb::GetVersionResponse {
            version: "v0.24.1-fake".into(),
        }))
    }
}

impl FakeTracee {
    async fn emit(&self, tag: &str, files: &[&str]) -> Result<usize, String> {
        let mut events = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
            let json: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
            events.push(grpc_event(&json, tag));
        }
        self.send(events).await
    }

    /// The length-delimited protobuf events in `file`, each with the `test_tag` datum added.
    async fn emit_pb(&self, tag: &str, file: &str) -> Result<usize, String> {
        use prost::Message;
        let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        let mut rest = bytes.as_slice();
        let mut events = Vec::new();
        while !rest.is_empty() {
            let mut event = pb::Event::decode_length_delimited(&mut rest)
                .map_err(|e| format!("{file}: {e}"))?;
            event.data.push(pb::EventValue {
                name: "test_tag".into(),
                value: Some(Kind::Str(tag.into())),
            });
            events.push(event);
        }
        self.send(events).await
    }

    /// One event with a string datum of `bytes` bytes (to exceed the subscriber's limit).
    async fn emit_big(&self, tag: &str, bytes: usize) -> Result<usize, String> {
        let event = pb::Event {
            timestamp: Some(prost_types::Timestamp::default()),
            id: 1,
            name: "big".into(),
            data: vec![
                pb::EventValue {
                    name: "blob".into(),
                    value: Some(Kind::Str("x".repeat(bytes))),
                },
                pb::EventValue {
                    name: "test_tag".into(),
                    value: Some(Kind::Str(tag.into())),
                },
            ],
            ..Default::default()
        };
        self.send(vec![event]).await
    }

    async fn send(&self, events: Vec<pb::Event>) -> Result<usize, String> {
        let subscribers: Vec<(Subscriber, Vec<String>)> = self
            .subscribers
            .lock()
            .map(|all| all.clone())
            .unwrap_or_default();
        let mut sent = 0;
        for (subscriber, policies) in subscribers {
            for event in &events {
                let mut event = event.clone();
                if !policies.is_empty() {
                    event.policies = Some(pb::Policies {
                        matched: policies.clone(),
                    });
                }
                let response = pb::StreamEventsResponse { event: Some(event) };
                if subscriber.send(Ok(response)).await.is_ok() {
                    sent += 1;
                }
            }
        }
        Ok(sent)
    }
}

/// A Tracee `trace.Event` (JSON fixture) as Tracee's gRPC server streams it.
fn grpc_event(json: &Value, tag: &str) -> pb::Event {
    let properties = &json["metadata"]["Properties"];
    let is_signature = properties.get("signatureID").is_some();
    let name = text(&json["eventName"]);
    let mut data: Vec<pb::EventValue> = json["args"]
        .as_array()
        .map(|args| args.iter().map(event_value).collect())
        .unwrap_or_default();
    data.push(pb::EventValue {
        name: "test_tag".into(),
        value: Some(Kind::Str(tag.into())),
    });
    let container_id = first_text(&[&json["container"]["id"], &json["containerId"]]);
    let pod = first_text(&[&json["kubernetes"]["podName"], &json["podName"]]);
    pb::Event {
        timestamp: Some(nanos(&json["timestamp"])),
        id: if is_signature {
            signature_id(&json["eventId"])
        } else {
            external_id(&name)
        },
        name,
        policies: json["matchedPolicies"].as_array().map(|p| pb::Policies {
            matched: p.iter().map(text).collect(),
        }),
        workload: Some(pb::Workload {
            process: Some(pb::Process {
                executable: json["executable"]["path"]
                    .as_str()
                    .map(|p| pb::Executable { path: p.into() }),
                unique_id: number(&json["processEntityId"]),
                host_pid: number(&json["hostProcessId"]),
                pid: number(&json["processId"]),
                real_user: number(&json["userId"]).map(|id| pb::User { id: Some(id) }),
                thread: Some(pb::Thread {
                    start_time: Some(nanos(&json["threadStartTime"])),
                    name: text(&json["processName"]),
                    unique_id: number(&json["threadEntityId"]),
                    host_tid: number(&json["hostThreadId"]),
                    tid: number(&json["threadId"]),
                    syscall: text(&json["syscall"]),
                    compat: json["contextFlags"]["isCompat"].as_bool().unwrap_or(false),
                    user_stack_trace: None,
                }),
                ancestors: vec![pb::Process {
                    unique_id: number(&json["parentEntityId"]),
                    host_pid: number(&json["hostParentProcessId"]),
                    pid: number(&json["parentProcessId"]),
                    ..Default::default()
                }],
            }),
            container: (!container_id.is_empty()).then(|| pb::Container {
                id: container_id,
                name: first_text(&[&json["container"]["name"], &json["containerName"]]),
                image: Some(pb::ContainerImage {
                    id: String::new(),
                    repo_digests: vec![],
                    name: first_text(&[&json["container"]["image"], &json["containerImage"]]),
                }),
                started: json["contextFlags"]["containerStarted"]
                    .as_bool()
                    .unwrap_or(false),
            }),
            k8s: (!pod.is_empty()).then(|| pb::K8s {
                pod: Some(pb::Pod {
                    name: pod,
                    uid: first_text(&[&json["kubernetes"]["podUID"], &json["podUID"]]),
                    labels: BTreeMap::new(),
                }),
                namespace: Some(pb::K8sNamespace {
                    name: first_text(&[&json["kubernetes"]["podNamespace"], &json["podNamespace"]]),
                }),
            }),
        }),
        data,
        threat: threat(&json["metadata"]),
        detected_from: None,
    }
}

/// Tracee fills `threat` only for signatures whose metadata has a severity.
fn threat(metadata: &Value) -> Option<pb::Threat> {
    let properties = metadata["Properties"].as_object()?;
    let severity = properties.get("Severity")?.as_i64()?;
    let mut rest = BTreeMap::new();
    for (key, value) in properties {
        if matches!(
            key.as_str(),
            "Category" | "external_id" | "Technique" | "Severity" | "signatureName"
        ) {
            continue;
        }
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rest.insert(key.clone(), value);
    }
    Some(pb::Threat {
        description: text(&metadata["Description"]),
        mitre: Some(pb::Mitre {
            tactic: Some(pb::MitreTactic {
                name: text(&properties["Category"]),
            }),
            technique: Some(pb::MitreTechnique {
                id: text(&properties["external_id"]),
                name: text(&properties["Technique"]),
            }),
        }),
        severity: severity as i32,
        name: text(&properties["signatureName"]),
        properties: rest,
    })
}

/// Tracee's external event ids for the fixtures' events (x86_64 syscall number + 1, …).
fn external_id(name: &str) -> i32 {
    match name {
        "execve" => 60,
        "openat" => 258,
        "security_file_open" => 1032,
        _ => 0,
    }
}

/// A signature's event id (6000 and up) from the fixture's `eventId` (a string or a number).
fn signature_id(value: &Value) -> i32 {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or_default()
}

fn event_value(arg: &Value) -> pb::EventValue {
    let name = text(&arg["name"]);
    let kind = &arg["type"];
    let value = &arg["value"];
    let kind = match value {
        Value::Null => None,
        Value::Bool(b) => Some(Kind::Bool(*b)),
        Value::String(s) => Some(Kind::Str(s.clone())),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) if i32::try_from(i).is_ok() => Kind::Int32(i as i32),
            (Some(i), _) => Kind::Int64(i),
            (None, Some(u)) => Kind::UInt64(u),
            _ => Kind::Str(n.to_string()),
        }),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            if kind == "[]trace.DnsQueryData" {
                None
            } else {
                Some(Kind::StrArray(pb::StringArray {
                    value: items.iter().map(text).collect(),
                }))
            }
        }
        Value::Array(items) if kind == "[]trace.DnsQueryData" => {
            Some(Kind::DnsQuestions(pb::DnsQuestions {
                questions: items
                    .iter()
                    .map(|q| pb::DnsQueryData {
                        query: text(&q["query"]),
                        query_type: text(&q["query_type"]),
                        query_class: text(&q["query_class"]),
                    })
                    .collect(),
            }))
        }
        Value::Object(_) if kind == "trace.PktMeta" => {
            Some(Kind::PacketMetadata(pb::PacketMetadata {
                src_ip: text(&value["src_ip"]),
                dst_ip: text(&value["dst_ip"]),
                src_port: number(&value["src_port"]).unwrap_or_default(),
                dst_port: number(&value["dst_port"]).unwrap_or_default(),
                protocol: number(&value["protocol"]).unwrap_or_default(),
                packet_len: number(&value["packet_len"]).unwrap_or_default(),
                iface: text(&value["iface"]),
                direction: 0,
            }))
        }
        other => Some(Kind::Struct(structure(other))),
    };
    pb::EventValue { name, value: kind }
}

fn structure(value: &Value) -> prost_types::Struct {
    let fields = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), proto_value(v)))
            .collect(),
        other => [("value".to_string(), proto_value(other))]
            .into_iter()
            .collect(),
    };
    prost_types::Struct { fields }
}

fn proto_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind as K;
    let kind = match value {
        Value::Null => K::NullValue(0),
        Value::Bool(b) => K::BoolValue(*b),
        Value::Number(n) => K::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => K::StringValue(s.clone()),
        Value::Array(items) => K::ListValue(prost_types::ListValue {
            values: items.iter().map(proto_value).collect(),
        }),
        Value::Object(_) => K::StructValue(structure(value)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn nanos(value: &Value) -> prost_types::Timestamp {
    let ns = value.as_u64().unwrap_or_default();
    prost_types::Timestamp {
        seconds: (ns / 1_000_000_000) as i64,
        nanos: (ns % 1_000_000_000) as i32,
    }
}

fn number(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn first_text(values: &[&Value]) -> String {
    values
        .iter()
        .map(|v| text(v))
        .find(|t| !t.is_empty())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let tracee = FakeTracee {
        known_policies: args
            .iter()
            .position(|a| a == "--policies")
            .and_then(|i| args.get(i + 1))
            .map(|list| list.split(',').map(str::to_string).collect()),
        ..FakeTracee::default()
    };
    let service = TraceeServiceServer::new(tracee.clone());
    let server = match args.get(1).map(String::as_str) {
        Some("--socket") => {
            let path = args.get(2).ok_or("--socket PATH")?;
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            say(serde_json::json!({ "event": "listening", "address": path }));
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming),
            )
        }
        Some("--tcp") => {
            let addr = args.get(2).ok_or("--tcp ADDR")?;
            let listener = tokio::net::TcpListener::bind(addr).await?;
            say(
                serde_json::json!({ "event": "listening", "address": listener.local_addr()?.to_string() }),
            );
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming),
            )
        }
        _ => return Err("usage: fake_tracee (--socket PATH | --tcp ADDR)".into()),
    };
    // Commands arrive on stdin; a plain thread reads it (tokio's stdin needs a feature).
    let (commands, mut lines) = mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if commands.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["emit", tag, files @ ..] => match tracee.emit(tag, files).await {
                Ok(sent) => {
                    say(serde_json::json!({ "event": "emitted", "tag": tag, "sent": sent }))
                }
                Err(error) => say(serde_json::json!({ "event": "error", "error": error })),
            },
            ["emit-pb", tag, file] => match tracee.emit_pb(tag, file).await {
                Ok(sent) => {
                    say(serde_json::json!({ "event": "emitted", "tag": tag, "sent": sent }))
                }
                Err(error) => say(serde_json::json!({ "event": "error", "error": error })),
            },
            ["emit-big", tag, bytes] => {
                let bytes = bytes.parse().unwrap_or(0);
                match tracee.emit_big(tag, bytes).await {
                    Ok(sent) => {
                        say(serde_json::json!({ "event": "emitted", "tag": tag, "sent": sent }))
                    }
                    Err(error) => say(serde_json::json!({ "event": "error", "error": error })),
                }
            }
            [] => {}
            _ => say(
                serde_json::json!({ "event": "error", "error": format!("unknown command: {line}") }),
            ),
        }
    }
    // stdin closed: the test is done with us.
    server.abort();
    Ok(())
}
