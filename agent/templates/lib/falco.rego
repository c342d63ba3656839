# Helpers over Falco alerts (Falco's JSON output, as its http_output POSTs it or Falcosidekick
# forwards it: rule, priority, output, output_fields, source, tags, time, hostname, uuid), loaded
# into every route and template. Every helper is defined for every input: missing or mistyped
# fields, and Falco's null / "<NA>" for a field without a value, give "" (or -1, [], {}).
package hooker.lib.falco

import data.hooker.lib.render
import rego.v1

# A Falco alert: a rule name, a priority and the output fields object Falco always sends.
is_falco if {
	filled(input.rule)
	filled(input.priority)
	is_object(input.output_fields)
}

rule := input.rule if filled(input.rule)
else := ""

# The priority as Falco spells it (Emergency .. Debug); "" when missing.
priority := input.priority if filled(input.priority)
else := ""

# Falco's priorities, worst first, as the syslog levels they are (0 = Emergency .. 7 = Debug).
priority_numbers := {
	"emergency": 0, "alert": 1, "critical": 2, "error": 3, "warning": 4, "notice": 5,
	"informational": 6, "info": 6, "debug": 7,
}

# The priority as 0 (Emergency) .. 7 (Debug); -1 when missing or unknown.
priority_number := n if {
	n := priority_numbers[lower(priority)]
} else := -1

# At least as bad as `p` (a Falco priority name, any case): `falco.priority_at_least("Warning")`.
priority_at_least(p) if {
	priority_number >= 0
	priority_number <= priority_numbers[lower(p)]
}

# Severity 0 (info) .. 4 (critical), as data.hooker.lib.tracee.severity: Emergency, Alert and
# Critical are 4, Error 3, Warning 2, Notice 1, Informational and Debug 0; -1 when unknown.
severity_of_priority := [4, 4, 4, 3, 2, 1, 0, 0]

severity := severity_of_priority[priority_number] if priority_number >= 0
else := -1

severity_name := render.levels[4 - severity] if severity >= 0
else := "unknown"

output := input.output if filled(input.output)
else := ""

output_fields := input.output_fields if is_object(input.output_fields)
else := {}

# One output field as text: "" when absent, null or "<NA>".
field(name) := v if {
	v := render.text(output_fields[name])
	v != "<NA>"
} else := ""

source := input.source if filled(input.source)
else := ""

tags := [t | some t in input.tags; filled(t)] if is_array(input.tags)
else := []

has_tag(t) if t in tags

hostname := input.hostname if filled(input.hostname)
else := ""

timestamp := input.time if filled(input.time)
else := ""

uuid := input.uuid if filled(input.uuid)
else := ""

# The alert's own text: the output without Falco's "<time>: <Priority> " prefix.
message := m if {
	parts := regex.find_all_string_submatch_n(`(?s)^[0-9:.T+\-Z]+: [A-Za-z]+ (.*)$`, output, 1)
	count(parts) == 1
	m := parts[0][1]
} else := output

# "host" is Falco's container id for an event outside any container.
container_id := "" if field("container.id") == "host"
else := field("container.id")

container_name := "" if container_id == ""
else := field("container.name")

image_repository := field("container.image.repository")

image := image_repository if field("container.image.tag") == ""
else := sprintf("%s:%s", [image_repository, field("container.image.tag")]) if image_repository != ""
else := ""

# The pod: Falco's Kubernetes fields, or the target of a Kubernetes audit event on a pod.
pod_name := field("k8s.pod.name") if field("k8s.pod.name") != ""
else := field("ka.target.name") if field("ka.target.resource") == "pods"
else := ""

namespace := field("k8s.ns.name") if field("k8s.ns.name") != ""
else := field("ka.target.namespace") if field("ka.target.namespace") != ""
else := ""

process_name := field("proc.name")

command := field("proc.cmdline")

user := field("user.name") if field("user.name") != ""
else := field("ka.user.name")

file := field("fd.name")

# MITRE ATT&CK from the tags: the tactic tag (mitre_*) and technique ids (T1059, TA0003).
mitre_tactic := replace(substring(t, 6, -1), "_", " ") if {
	some t in tags
	startswith(t, "mitre_")
} else := ""

mitre_ids := [t | some t in tags; regex.match(`^TA?[0-9]{4}(\.[0-9]{3})?$`, t)]

filled(x) if {
	is_string(x)
	x != ""
	x != "<NA>"
}

# === The card the built-in falco templates render (see lib/render.rego) ===

# One line, at most 250 characters.
title := render.clip(render.one_line(sprintf("Falco %s - %s", [by_default(priority, "Alert"), by_default(rule, "unknown")])), 250)

level := render.levels[4 - severity] if severity >= 0
else := "info"

pod := concat("/", [x | some x in [namespace, pod_name]; x != ""]) if pod_name != ""
else := ""

short_container_id := substring(container_id, 0, 12)

container := concat(" ", [x | some x in [container_name, paren(short_container_id)]; x != ""])

mitre := concat(" ", [x | some x in [mitre_tactic, paren(concat(", ", mitre_ids))]; x != ""])

# Where it happened, most specific first: "pod:<ns>/<pod>", "container:<id>" or "host:<name>".
scope := sprintf("pod:%s", [pod]) if pod != ""
else := sprintf("container:%s", [short_container_id]) if container_id != ""
else := sprintf("host:%s", [hostname]) if hostname != ""
else := sprintf("host:%s", [node_name]) if node_name != ""
else := ""

node_name := input.hooker.node if filled(input.hooker.node)
else := ""

# Stable key of the finding: the rule and where, whitespace as "_",
# e.g. falco:Terminal_shell_in_container:pod:shop/app.
finding := regex.replace(concat(":", [x | some x in ["falco", by_default(rule, "unknown"), scope]; x != ""]), `\s`, "_")

facts := [
	["Rule", rule],
	["Priority", priority],
	["Source", source],
	["Time", timestamp],
	["Host", hostname],
	["Pod", pod],
	["Container", container],
	["Image", image],
	["Process", process_name],
	["Command", render.clip(render.one_line(command), 500)],
	["User", user],
	["File", file],
	["MITRE ATT&CK", mitre],
	["Tags", concat(", ", tags)],
]

# At most 32 output fields, sorted by name, each value at most 500 characters.
field_rows := array.slice(
	[[k, render.clip(render.one_line(field(k)), 500)] | some k in sort(object.keys(output_fields)); field(k) != ""],
	0, 32,
)

card := {
	"title": title,
	"lead": message,
	"facts": facts,
	"sections": [{"heading": "Output fields", "rows": field_rows}],
	"severity": level,
	"finding": finding,
	"entity": replace(scope, ":", " "),
	"source": by_default(hostname, "falco"),
	"component": process_name,
	"group": namespace,
	"class": by_default(mitre_tactic, by_default(source, "falco")),
	"tags": [t | some t in array.concat(["falco", level], tags); t != ""],
}

paren(s) := "" if s == ""
else := sprintf("(%s)", [s])

by_default(s, d) := d if s == ""
else := s
