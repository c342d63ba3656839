# Helpers over a Trivy JSON report (`trivy image|fs|repo --format json`: ArtifactName, ArtifactType,
# Metadata, Results[].Vulnerabilities), loaded into every route and template, and the card the
# built-in trivy templates render (see lib/render.rego). Missing fields give "", 0 or [].
package hooker.lib.trivy

import data.hooker.lib.render
import rego.v1

is_report if is_string(input.ArtifactName)
is_report if is_array(input.Results)

artifact := input.ArtifactName if filled(input.ArtifactName)
else := "unknown artifact"

artifact_type := render.text(object.get(input, "ArtifactType", ""))

results := [r | some r in input.Results; is_object(r)] if is_array(input.Results)
else := []

# Every vulnerability of every result, worst first (Trivy's order within a severity).
vulnerabilities := [v | some sev in render.vuln_levels; some v in all_vulns; v.severity == sev]

# Built with builtins only (no function calls per vulnerability): reports can list thousands.
# Values are as Trivy wrote them; the renderers type-check the few they show.
all_vulns := [{
	"id": object.get(v, "VulnerabilityID", ""),
	"severity": object.get(render.vuln_level_of, object.get(v, "Severity", ""), "unknown"),
	"pkg": object.get(v, "PkgName", ""),
	"installed": object.get(v, "InstalledVersion", ""),
	"fixed": object.get(v, "FixedVersion", ""),
	"title": object.get(v, "Title", ""),
	"url": object.get(v, "PrimaryURL", ""),
	"target": object.get(r, "Target", ""),
} |
	some r in results
	list := object.get(r, "Vulnerabilities", [])
	is_array(list)
	some v in list
	is_object(v)
]

# Vulnerabilities per severity: {"critical": n, "high": n, "medium": n, "low": n, "unknown": n}.
counts := {sev: count([v | some v in all_vulns; v.severity == sev]) | some sev in render.vuln_levels}

# The worst severity found, normalised ("info" when there is none).
level := render.vulns_level(counts)

misconfigurations := count([m |
	some r in results
	list := object.get(r, "Misconfigurations", [])
	is_array(list)
	some m in list
	object.get(m, "Status", "FAIL") == "FAIL"
])

secrets := count([s |
	some r in results
	list := object.get(r, "Secrets", [])
	is_array(list)
	some s in list
])

os := concat(" ", [x |
	some x in [
		render.field(input.Metadata.OS, "Family"),
		render.field(input.Metadata.OS, "Name"),
		eosl,
	]
	x != ""
]) if is_object(input.Metadata.OS)
else := ""

eosl := "(end of life)" if input.Metadata.OS.EOSL == true
else := ""

scanner := sprintf("Trivy %s", [input.Trivy.Version]) if filled(input.Trivy.Version)
else := ""

lead := sprintf("%v vulnerabilities found: %s.", [count(all_vulns), render.counts_text(counts)]) if count(all_vulns) > 0
else := "No vulnerabilities found."

# Stable key of the finding: the scanned artifact, e.g. trivy:alpine:3.10.
finding := replace(sprintf("trivy:%s", [artifact]), " ", "_")

facts := [
	["Artifact", artifact],
	["Type", artifact_type],
	["OS", os],
	["Image ID", render.text(object.get(object.get(input, "Metadata", {}), "ImageID", ""))],
	["Scanned", render.text(object.get(input, "CreatedAt", ""))],
	["Scanner", scanner],
	["Misconfigurations", count_text(misconfigurations)],
	["Secrets", count_text(secrets)],
]

count_text(n) := "" if n == 0
else := sprintf("%v", [n])

card := {
	"title": sprintf("%s vulnerability scan report", [artifact]),
	"lead": lead,
	"url": render.text(object.get(object.get(input, "Metadata", {}), "RepoURL", "")),
	"facts": facts,
	"counts": counts,
	"vulns": vulnerabilities,
	"severity": level,
	"finding": finding,
	"entity": artifact,
	"source": "trivy",
	"component": artifact_type,
	"class": "vulnerability scan",
	"tags": [t | some t in ["trivy", artifact_type, level]; t != ""],
}

filled(x) if {
	is_string(x)
	x != ""
}
