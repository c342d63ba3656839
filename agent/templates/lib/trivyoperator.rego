# Helpers over a trivy-operator VulnerabilityReport as its webhook sends it: the bare custom
# resource, or `{"verb": "update"|"delete", "operatorObject": <CR>}` when the operator also sends
# deletions. Loaded into every route and template, with the card the built-in trivyoperator
# templates render (see lib/render.rego). Missing fields give "", 0 or [].
package hooker.lib.trivyoperator

import data.hooker.lib.render
import rego.v1

# The custom resource, unwrapped.
resource := input.operatorObject if is_object(input.operatorObject)
else := input

# "update" or "delete" when wrapped, else "".
verb := input.verb if filled(input.verb)
else := ""

is_report if is_object(resource.report)

report := resource.report if is_object(resource.report)
else := {}

metadata := resource.metadata if is_object(resource.metadata)
else := {}

labels := metadata.labels if is_object(metadata.labels)
else := {}

kind := resource.kind if filled(resource.kind)
else := "VulnerabilityReport"

name := render.field(metadata, "name")

namespace := labels["trivy-operator.resource.namespace"] if filled(labels["trivy-operator.resource.namespace"])
else := render.field(metadata, "namespace")

# The scanned workload and container, from the operator's labels.
workload_kind := render.field(labels, "trivy-operator.resource.kind")

workload_name := render.field(labels, "trivy-operator.resource.name")

workload := concat("/", [x | some x in [workload_kind, workload_name]; x != ""])

container := render.field(labels, "trivy-operator.container.name")

artifact := report.artifact if is_object(report.artifact)
else := {}

registry := render.field(report.registry, "server") if is_object(report.registry)
else := ""

repository := render.field(artifact, "repository")

# repository:tag (Postee's spelling), and the full reference with registry and digest.
image := sprintf("%s:%s", [by_default(repository, "unknown"), by_default(render.field(artifact, "tag"), "unknown")])

image_reference := concat("", [
	concat("/", [x | some x in [registry, repository]; x != ""]),
	prefixed(":", render.field(artifact, "tag")),
	prefixed("@", render.field(artifact, "digest")),
])

scanner := concat(" ", [x | some x in [render.field(report.scanner, "name"), render.field(report.scanner, "version")]; x != ""]) if is_object(report.scanner)
else := ""

os := concat(" ", [x | some x in [render.field(report.os, "family"), render.field(report.os, "name")]; x != ""]) if is_object(report.os)
else := ""

list := [v | some v in report.vulnerabilities; is_object(v)] if is_array(report.vulnerabilities)
else := []

# Built with builtins only (no function calls per vulnerability): reports can list thousands.
# Values are as the operator wrote them; the renderers type-check the few they show.
all_vulns := [{
	"id": object.get(v, "vulnerabilityID", ""),
	"severity": object.get(render.vuln_level_of, object.get(v, "severity", ""), "unknown"),
	"pkg": object.get(v, "resource", ""),
	"installed": object.get(v, "installedVersion", ""),
	"fixed": object.get(v, "fixedVersion", ""),
	"title": object.get(v, "title", ""),
	"url": object.get(v, "primaryLink", ""),
	"target": object.get(v, "target", ""),
} | some v in list]

# Worst first (the report's order within a severity).
vulnerabilities := [v | some sev in render.vuln_levels; some v in all_vulns; v.severity == sev]

summary_keys := {"critical": "criticalCount", "high": "highCount", "medium": "mediumCount", "low": "lowCount", "unknown": "unknownCount"}

# Per severity: the report's summary when it has one (the list may be cut short), else counted.
counts := {sev: n |
	some sev in render.vuln_levels
	n := summary_count(sev)
}

summary_count(sev) := n if {
	is_object(report.summary)
	n := report.summary[summary_keys[sev]]
	is_number(n)
} else := count([v | some v in all_vulns; v.severity == sev])

total := sum([n | some n in counts])

# The worst severity found, normalised; a deleted report is only information.
level := "info" if verb == "delete"
else := render.vulns_level(counts)

title := sprintf("Vulnerability report deleted for image %s in namespace %s", [image, by_default(namespace, "unknown")]) if verb == "delete"
else := sprintf("Vulnerability issue with image %s in namespace %s", [image, by_default(namespace, "unknown")])

lead := "The operator deleted this report." if verb == "delete"
else := sprintf("%v vulnerabilities found: %s.", [total, render.counts_text(counts)]) if total > 0
else := "No vulnerabilities found."

# Stable key of the finding: the image as deployed in a workload's container,
# e.g. trivy-operator:default/ReplicaSet/nginx-6d4cf56db6/nginx@library/nginx:1.16.
finding := replace(sprintf("trivy-operator:%s@%s", [concat("/", [x | some x in [namespace, where]; x != ""]), image]), " ", "_")

where := concat("/", [x | some x in [workload, container]; x != ""]) if workload != ""
else := name

facts := [
	["Image", image_reference],
	["Namespace", namespace],
	["Workload", workload],
	["Container", container],
	["Report", name],
	["OS", os],
	["Scanner", scanner],
	["Updated", render.field(report, "updateTimestamp")],
	["Change", verb],
]

card := {
	"title": title,
	"lead": lead,
	"facts": facts,
	"counts": counts,
	"vulns": vulnerabilities,
	"severity": level,
	"resolved": verb == "delete",
	"finding": finding,
	"entity": concat("/", [x | some x in [namespace, where]; x != ""]),
	"source": "trivy-operator",
	"component": image,
	"group": namespace,
	"class": kind,
	"tags": [t | some t in ["trivy-operator", namespace, workload_kind, level]; t != ""],
}

prefixed(p, s) := "" if s == ""
else := concat("", [p, s])

by_default(s, d) := d if s == ""
else := s

filled(x) if {
	is_string(x)
	x != ""
}
