# Helpers over Tracee events in all three JSON shapes, loaded into every route and template:
#   A: tracee-rules Finding {"Data","Context","SigMetadata"} (Tracee <= v0.10, Postee's examples)
#   B: trace.Event (Tracee v0.11 .. v0.24: eventName, metadata.Properties)
#   C: v1beta1.Event (Tracee main and gRPC: name, workload, threat)
# Detections are recognised by their signature metadata / threat, never by event id.
# Every helper is defined for every input: missing or mistyped fields give "" (or -1, [], {}).
package hooker.lib.tracee

import data.hooker.lib.render
import rego.v1

is_detection if input.SigMetadata
is_detection if input.metadata.Properties.signatureID
is_detection if input.threat

is_tracee if is_detection
is_tracee if input.eventName
is_tracee if {
	input.name
	input.workload
}

signature_id := input.SigMetadata.ID if filled(input.SigMetadata.ID)
else := input.metadata.Properties.signatureID if filled(input.metadata.Properties.signatureID)
else := input.threat.properties.signatureID if filled(input.threat.properties.signatureID)
else := input.threat.properties.id if filled(input.threat.properties.id)
else := ""

signature_name := input.SigMetadata.Name if filled(input.SigMetadata.Name)
else := input.metadata.Properties.signatureName if filled(input.metadata.Properties.signatureName)
else := input.threat.name if filled(input.threat.name)
else := event_name

event_name := input.eventName if filled(input.eventName)
else := input.name if filled(input.name)
else := input.SigMetadata.EventName if filled(input.SigMetadata.EventName)
else := input.Context.eventName if filled(input.Context.eventName)
else := ""

description := input.SigMetadata.Description if filled(input.SigMetadata.Description)
else := input.metadata.Description if filled(input.metadata.Description)
else := input.threat.description if filled(input.threat.description)
else := ""

# Severity 0 (info) .. 4 (critical); -1 when the event carries none.
severity := n if {
	n := level_number(input.SigMetadata.Properties.Severity)
} else := n if {
	n := level_number(input.metadata.Properties.Severity)
} else := n if {
	n := level_number(input.threat.severity)
} else := -1

severity_names := ["info", "low", "medium", "high", "critical"]

severity_name := name if {
	name := severity_names[severity]
} else := "unknown"

mitre_technique := input.metadata.Properties.Technique if filled(input.metadata.Properties.Technique)
else := input.threat.mitre.technique.name if filled(input.threat.mitre.technique.name)
else := input.SigMetadata.Properties["MITRE ATT&CK"] if filled(input.SigMetadata.Properties["MITRE ATT&CK"])
else := ""

mitre_category := input.metadata.Properties.Category if filled(input.metadata.Properties.Category)
else := input.threat.mitre.tactic.name if filled(input.threat.mitre.tactic.name)
else := ""

mitre_id := input.metadata.Properties.external_id if filled(input.metadata.Properties.external_id)
else := input.threat.mitre.technique.id if filled(input.threat.mitre.technique.id)
else := ""

# The triggering event's fields: the Finding's Context (A) or the event itself (B).
context := input.Context if is_object(input.Context)
else := input

process_name := context.processName if filled(context.processName)
else := input.workload.process.thread.name if filled(input.workload.process.thread.name)
else := ""

host_name := context.hostName if filled(context.hostName)
else := ""

pod_name := context.kubernetes.podName if filled(context.kubernetes.podName)
else := context.podName if filled(context.podName)
else := input.workload.k8s.pod.name if filled(input.workload.k8s.pod.name)
else := ""

pod_namespace := context.kubernetes.podNamespace if filled(context.kubernetes.podNamespace)
else := context.podNamespace if filled(context.podNamespace)
else := input.workload.k8s.namespace.name if filled(input.workload.k8s.namespace.name)
else := ""

container_id := context.container.id if filled(context.container.id)
else := context.containerId if filled(context.containerId)
else := input.workload.container.id if filled(input.workload.container.id)
else := ""

container_image := context.container.image if filled(context.container.image)
else := context.containerImage if filled(context.containerImage)
else := input.workload.container.image.name if filled(input.workload.container.image.name)
else := ""

container_name := context.container.name if filled(context.container.name)
else := context.containerName if filled(context.containerName)
else := input.workload.container.name if filled(input.workload.container.name)
else := ""

event_id := sprintf("%v", [context.eventId]) if filled(context.eventId)
else := sprintf("%v", [input.id]) if is_number(input.id)
else := ""

# RFC 3339, UTC, whole seconds ("" when the event carries no time).
timestamp := time.format([context.timestamp, "UTC", "RFC3339"]) if is_number(context.timestamp)
else := input.timestamp if filled(input.timestamp)
else := ""

host_pid := context.hostProcessId if is_number(context.hostProcessId)
else := input.workload.process.host_pid if is_number(input.workload.process.host_pid)
else := -1

executable := context.executable.path if filled(context.executable.path)
else := input.workload.process.executable.path if filled(input.workload.process.executable.path)
else := ""

syscall := context.syscall if filled(context.syscall)
else := input.workload.process.thread.syscall if filled(input.workload.process.thread.syscall)
else := ""

policies := [p | some p in context.matchedPolicies; filled(p)] if is_array(context.matchedPolicies)
else := [p | some p in input.policies.matched; filled(p)] if is_array(input.policies.matched)
else := []

# Arguments as name -> value, from `args` (A, B) or `data` (C).
args[a.name] := a.value if {
	is_array(context.args)
	some a in context.args
	filled(a.name)
}

args[d.name] := v if {
	is_array(input.data)
	some d in input.data
	filled(d.name)
	v := data_value(d)
}

# Arguments in the event's order as [name, value], without the triggering event.
arg_list := [[a.name, a.value] | some a in context.args; filled(a.name); not a.name in trigger_args] if is_array(context.args)
else := [[d.name, data_value(d)] | some d in input.data; filled(d.name)] if is_array(input.data)
else := []

trigger_args := {"triggeredBy", "detectedFrom"}

# What triggered a detection: the `triggeredBy` / `detectedFrom` argument (B) or `detected_from` (C).
trigger := input.detected_from if is_object(input.detected_from)
else := t if {
	is_array(context.args)
	some a in context.args
	a.name in trigger_args
	t := a.value
	is_object(t)
} else := {}

# A v1beta1 data item is {"name": n, "<kind>": value}; arrays and timespecs nest as {"value": v}.
data_value(d) := unwrap(v) if {
	rest := object.remove(d, ["name"])
	count(rest) == 1
	some v in rest
} else := object.remove(d, ["name"])

unwrap(v) := v.value if {
	is_object(v)
	object.keys(v) == {"value"}
} else := v

filled(x) if {
	is_string(x)
	x != ""
}

# A severity as 0..4: numbers, and digit strings.
level_number(x) := x if {
	is_number(x)
	x >= 0
	x <= 4
} else := n if {
	is_string(x)
	regex.match(`^[0-4]$`, x)
	n := to_number(x)
}

# === The card the built-in tracee templates render (see lib/render.rego) ===

display_name := signature_name if signature_name != ""
else := signature_id if signature_id != ""
else := "unknown"

title := sprintf("Tracee Detection - %s", [display_name]) if is_detection
else := sprintf("Tracee Event - %s", [by_default(event_name, "unknown")])

# Normalised severity: the signature's; "info" for events and for signatures without one.
level := render.level(severity) if is_detection
else := "info"

severity_text := "" if severity < 0
else := sprintf("%s (%v)", [severity_name, severity])

mitre := concat(" ", [x |
	some x in [
		concat(": ", [y | some y in [mitre_category, mitre_technique]; y != ""]),
		paren(mitre_id),
	]
	x != ""
])

pod := concat("/", [x | some x in [pod_namespace, pod_name]; x != ""]) if pod_name != ""
else := ""

short_container_id := substring(container_id, 0, 12)

container := concat(" ", [x | some x in [container_name, paren(short_container_id)]; x != ""])

process := "" if process_name == ""
else := process_name if host_pid < 0
else := sprintf("%s (pid %v)", [process_name, host_pid])

event_text := "" if event_name == ""
else := event_name if event_id == ""
else := sprintf("%s (id %s)", [event_name, event_id])

trigger_text := "" if count(trigger) == 0
else := concat(" ", [x | some x in [render.text(object.get(trigger, "name", "")), trigger_arg_text]; x != ""])

trigger_arg_text := paren(concat(", ", [sprintf("%s=%s", [pair[0], render.clip(render.one_line(render.text(pair[1])), 100)]) | some pair in trigger_pairs]))

# The trigger's arguments as [name, value]: `args` (B) or typed `data` (C).
trigger_pairs := [[a.name, a.value] | some a in trigger.args; is_object(a); filled(a.name)] if is_array(trigger.args)
else := [[d.name, data_value(d)] | some d in trigger.data; is_object(d); filled(d.name)] if is_array(trigger.data)
else := []

# Where the event happened, most specific first: "pod:<ns>/<pod>", "container:<id>" or "host:<name>".
# Current Tracee sends no host name, so a host-only event falls back to the node Hooker runs on:
# the same signature on two nodes is two findings (two PagerDuty/OpsGenie alerts), not one.
scope := sprintf("pod:%s", [pod]) if pod != ""
else := sprintf("container:%s", [short_container_id]) if container_id != ""
else := sprintf("host:%s", [host_name]) if host_name != ""
else := sprintf("host:%s", [node_name]) if node_name != ""
else := ""

node_name := input.hooker.node if filled(input.hooker.node)
else := ""

what := signature_id if {
	is_detection
	signature_id != ""
} else := by_default(event_name, "unknown")

# Stable key of the finding: the signature (or event) and where, e.g. tracee:TRC-1022:pod:default/app-1.
finding := replace(concat(":", [x | some x in ["tracee", what, scope]; x != ""]), " ", "_")

return_value := "" if is_detection
else := sprintf("%v", [context.returnValue]) if is_number(context.returnValue)
else := ""

facts := [
	["Signature", signature_id],
	["Severity", severity_text],
	["MITRE ATT&CK", mitre],
	["Event", event_text],
	["Time", timestamp],
	["Host", host_name],
	["Pod", pod],
	["Container", container],
	["Image", container_image],
	["Process", process],
	["Executable", executable],
	["Syscall", syscall],
	["Return value", return_value],
	["Triggered by", trigger_text],
	["Policies", concat(", ", policies)],
]

# At most 16 arguments, each value at most 500 characters.
arg_rows := [[pair[0], render.clip(render.one_line(render.text(pair[1])), 500)] | some pair in array.slice(arg_list, 0, 16)]

kind := "detection" if is_detection
else := "event"

card := {
	"title": title,
	"lead": description,
	"facts": facts,
	"sections": [{"heading": "Arguments", "rows": arg_rows}],
	"severity": level,
	"finding": finding,
	"entity": replace(scope, ":", " "),
	"source": by_default(host_name, "tracee"),
	"component": process_name,
	"group": pod_namespace,
	"class": by_default(mitre_category, by_default(event_name, "tracee")),
	"tags": [t | some t in ["tracee", kind, signature_id, mitre_id, mitre_category, level]; t != ""],
}

paren(s) := "" if s == ""
else := sprintf("(%s)", [s])

by_default(s, d) := d if s == ""
else := s
